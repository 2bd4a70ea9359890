//! The server's log: to stderr, and never a reason for the service to fail. When stderr cannot
//! be written (a log file on a full disk, a closed pipe), the line is dropped and counted in
//! `hendelse_log_lines_dropped_total`: tracing-subscriber's default reports a failed write with
//! `eprintln!`, which panics when stderr fails, and that panic once killed the group-commit writer
//! in the middle of logging its own disk-full error.

use std::io::Write;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::LogFormat;

/// Installs the log (and, given a tracer, the export of spans) for the process.
pub fn init(format: LogFormat, tracer: Option<crate::telemetry::Tracer>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_env("HENDELSE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Colours only for a terminal: a log file or collector would get the escape codes as text.
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false)
        .with_writer(LossyStderr);
    let lines = match format {
        LogFormat::Json => lines.json().boxed(),
        LogFormat::Pretty => lines.boxed(),
    };
    #[cfg(feature = "otel")]
    let spans = tracer.map(|tracer| tracing_opentelemetry::layer().with_tracer(tracer));
    #[cfg(not(feature = "otel"))]
    let spans = tracer.map(|()| tracing_subscriber::layer::Identity::new());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .with(spans)
        .try_init();
}

/// Writes a line the process must print outside the log (the listening address on stdout),
/// without panicking when it cannot.
pub fn print_stdout(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        tracing::warn!("cannot write to stdout: {line}");
    }
}

/// Stderr that reports every write as done: what cannot be written is dropped and counted.
#[derive(Debug, Clone, Copy)]
pub struct LossyStderr;

impl<'a> MakeWriter<'a> for LossyStderr {
    type Writer = LossyStderr;

    fn make_writer(&'a self) -> Self::Writer {
        LossyStderr
    }
}

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::io::stderr().lock().write_all(buf).is_err() {
            metrics::counter!("hendelse_log_lines_dropped_total").increment(1);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
