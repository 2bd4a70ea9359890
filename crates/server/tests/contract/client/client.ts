// A client generated from the served /openapi.json (openapi-typescript's types with
// openapi-fetch), used as a new integrator would: publish a batch of events, read them back
// following `next`, create a subscription, and create a dialog. `tsc` checks every call and
// every use of an answer against the document; running it checks the server against both.
// Exits non-zero, with the reason, at the first disagreement.

import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type CloudEvent = components["schemas"]["CloudEvent"];

// The two Node globals used, declared here rather than by another package.
declare const process: {
  env: Record<string, string | undefined>;
  exit(code: number): never;
};

const baseUrl = process.env.HENDELSE_URL ?? "";
const orgToken = process.env.HENDELSE_ORG_TOKEN ?? "";
const resource = "urn:altinn:resource:super-simple-service";

const client = createClient<paths>({
  baseUrl,
  headers: { Authorization: `Bearer ${orgToken}` },
});

function check(condition: boolean, what: string): asserts condition {
  if (!condition) {
    console.error(`generated client: ${what}`);
    process.exit(1);
  }
}

const run = Date.now().toString(36);
const events: CloudEvent[] = [1, 2, 3, 4, 5].map((i) => ({
  specversion: "1.0",
  id: `client-${run}-${i}`,
  source: "https://example.com/generated-client",
  type: "no.example.generated.v1",
  resource,
  subject: "urn:altinn:organization:identifier-no:991825827",
  data: { i },
}));

// Publish: the batch content type, as the document names it.
const published = await client.POST("/events/api/v1/events", {
  body: events,
  headers: { "Content-Type": "application/cloudevents-batch+json" },
  bodySerializer: (body) => JSON.stringify(body),
});
check(published.response.status === 200, `publish answered ${published.response.status}`);

// Query from the start, two at a time, following `next` to the end.
const read: string[] = [];
let after = "0";
for (let page = 0; page < 100; page++) {
  const answer = await client.GET("/events/api/v1/events", {
    params: { query: { resource, after, size: 2, source: ["https://example.com/generated-client"] } },
  });
  check(answer.response.status === 200, `query answered ${answer.response.status}`);
  const next = answer.response.headers.get("next");
  check(next !== null, "a page has a next link");
  const batch: CloudEvent[] = answer.data ?? [];
  if (batch.length === 0) break;
  read.push(...batch.map((e) => e.id));
  const nextAfter = new URL(next).searchParams.get("after");
  check(nextAfter !== null, `next names where to go on: ${next}`);
  after = nextAfter;
}
check(
  JSON.stringify(read) === JSON.stringify(events.map((e) => e.id)),
  `read back ${JSON.stringify(read)}`,
);

// A subscription, then read it back by the id the answer gave.
const created = await client.POST("/events/api/v1/subscriptions", {
  body: { endPoint: "https://hooks.example.com/generated-client", resourceFilter: resource },
});
check(created.response.status === 201, `subscription create answered ${created.response.status}`);
const subscription = created.data;
check(subscription !== undefined, "the created subscription is in the answer");
const fetched = await client.GET("/events/api/v1/subscriptions/{id}", {
  params: { path: { id: subscription.id } },
});
check(fetched.data?.resourceFilter === resource, "the subscription reads back");

// A dialog, then read it back through its Location.
const dialog = await client.POST("/dialogporten/api/v1/serviceowner/dialogs", {
  body: {
    serviceResource: resource,
    party: "urn:altinn:organization:identifier-no:991825827",
    status: "InProgress",
    progress: 40,
    activities: [{ type: "DialogCreated" }],
  },
});
check(dialog.response.status === 201, `dialog create answered ${dialog.response.status}`);
const dialogId = dialog.data;
check(typeof dialogId === "string", "the new dialog's id");
const shown = await client.GET("/dialogporten/api/v1/serviceowner/dialogs/{id}", {
  params: { path: { id: dialogId } },
});
check(shown.response.status === 200, `dialog read answered ${shown.response.status}`);

console.log(
  JSON.stringify({ published: events.length, read: read.length, subscription: subscription.id, dialog: dialogId }),
);
