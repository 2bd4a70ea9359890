pub mod dialogs;
pub mod health;
pub mod publish;
pub mod query;
pub mod stream;
pub mod subscriptions;
