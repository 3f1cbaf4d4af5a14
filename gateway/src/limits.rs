//! Every limit the gateway applies, named once. `docs/gateway.md` lists
//! them; settings that can change one say so there.

/// Default largest intent body, bytes (`--max-body`).
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// Default largest distance between an intent's `issued_at` and the
/// gateway's clock, seconds (`--max-skew-seconds`).
pub const DEFAULT_MAX_SKEW_SECONDS: i64 = 300;
/// Default timeout of one upstream call, milliseconds
/// (`--upstream-timeout-ms`).
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 5_000;
/// Largest upstream answer read, bytes; the receipt records its hash.
pub const MAX_UPSTREAM_ANSWER: u64 = 1 << 20;
/// The first wait before an unfinished reservation (a commit whose
/// outcome is unknown, or one a crash interrupted) is tried again; each
/// failed try doubles it.
pub const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest wait between two tries of an unfinished reservation.
pub const RETRY_LONGEST: std::time::Duration = std::time::Duration::from_secs(60);
/// Longest `Idempotency-Key` header, characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;
/// Longest `X-Request-Id` header honoured, characters.
pub const MAX_REQUEST_ID: usize = 128;
/// Largest admin request body carrying a policy bundle, bytes.
pub const MAX_ADMIN_BODY: usize = 2 * 1024 * 1024;
/// Largest other admin request body (a delegation token, a version), bytes.
pub const MAX_ADMIN_TOKEN_BODY: usize = 64 * 1024;
/// Most files in a published policy bundle.
pub const MAX_BUNDLE_FILES: usize = 256;
/// Longest relative path of a bundle file, bytes.
pub const MAX_BUNDLE_PATH: usize = 200;
/// Default and largest `limit` of `GET /v1/ledger/entries`.
pub const DEFAULT_PAGE: u32 = 100;
/// Largest `limit` of `GET /v1/ledger/entries`.
pub const MAX_PAGE: u32 = 1_000;
/// Entries read per page while streaming an export.
pub const EXPORT_PAGE: u32 = 1_000;
/// `Retry-After` seconds of a 409 for a request still in flight.
pub const IN_FLIGHT_RETRY_AFTER: u32 = 1;
/// How often lapsed leases are expired (and the waiters they free
/// granted), ms: a lease blocks others at most this long past its expiry.
pub const LEASE_SWEEP_INTERVAL_MS: u64 = 500;
/// How often the ledger's Merkle tree is grown over new entries, ms.
pub const TREE_GROW_INTERVAL_MS: u64 = 500;
/// Default: at most one checkpoint per this many milliseconds...
pub const DEFAULT_CHECKPOINT_INTERVAL_MS: u64 = 1_000;
/// ...unless this many entries arrived since the latest.
pub const DEFAULT_CHECKPOINT_ENTRIES: u64 = 4_096;
/// Default time a witness has to answer, milliseconds.
pub const DEFAULT_WITNESS_TIMEOUT_MS: u64 = 5_000;
/// How long `/readyz` waits for the ledger's probe commit, milliseconds.
pub const READY_TIMEOUT_MS: u64 = 2_000;
/// Shortest `--read-token`, characters.
pub const MIN_READ_TOKEN: usize = 32;
/// Default most connections served at once (`--max-connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_024;
/// Default time to receive a request's header, and to keep an idle
/// connection, milliseconds (`--header-timeout-ms`).
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// Default time to receive a request's body, milliseconds
/// (`--body-timeout-ms`).
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 10_000;
/// Default time to finish a TLS handshake, milliseconds
/// (`--handshake-timeout-ms`).
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// An answer that makes no write progress for this long is dropped (a
/// client that stopped reading), milliseconds.
pub const SEND_TIMEOUT_MS: u64 = 30_000;
/// Longest a closing connection keeps reading (and discarding) what the
/// client still sends after the last answer, milliseconds: the answer is
/// not lost to a reset, and a trickling client cannot hold the slot.
pub const LINGER_TOTAL_MS: u64 = 30_000;
/// A closing connection stops waiting after this much silence from the
/// client, milliseconds.
pub const LINGER_IDLE_MS: u64 = 5_000;
/// On a graceful stop, longest the requests in progress are given to
/// finish (new ones are answered 503 meanwhile), milliseconds.
pub const SHUTDOWN_DRAIN_MS: u64 = 7_000;
/// `Retry-After` seconds of a `503 shutting-down`: longer than the quiet
/// period, so that a client that honours it finds the stop over (another
/// instance, or this one back) rather than a listener closing under it.
pub const SHUTDOWN_RETRY_AFTER: u32 = 5;
/// The drain ends early once no request is in progress and none has
/// arrived for this long, milliseconds.
pub const SHUTDOWN_QUIET_MS: u64 = 500;
/// Then, longest open connections are given to close, milliseconds.
pub const SHUTDOWN_CLOSE_MS: u64 = 1_000;
/// Then, longest the engine's own tasks (a decision whose client went
/// away, a background pass) are given to end, milliseconds.
pub const SHUTDOWN_TASKS_MS: u64 = 1_000;
/// Largest approval decision body, bytes.
pub const MAX_APPROVAL_BODY: usize = 16 * 1024;
/// Longest `?wait=` of `GET /v1/intents/{agent}/{intent_id}`, seconds.
pub const MAX_WAIT_SECONDS: u64 = 60;
/// Most long-polls (`?wait=`) one client address may hold at once; the
/// gateway's total is a quarter of its connections.
pub const MAX_WAITS_PER_ADDRESS: usize = 16;
/// `Retry-After` seconds of a long-poll refused for its bound.
pub const WAITS_RETRY_AFTER: u32 = 5;
/// File descriptors kept back from connections: the ledger, logs, key
/// files, outbound calls (targets, webhooks, lookups, witnesses).
pub const RESERVED_DESCRIPTORS: u64 = 128;
/// Fewest connections the descriptor limit must leave room for, or the
/// gateway refuses to start.
pub const MIN_CONNECTIONS: usize = 16;
/// Default interval of the approval expiry sweeper, milliseconds
/// (`--expiry-interval-ms`).
pub const DEFAULT_EXPIRY_INTERVAL_MS: u64 = 1_000;
/// Default timeout of one webhook delivery attempt, milliseconds
/// (`--webhook-timeout-ms`).
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 15_000;
/// How often an idle webhook worker looks for new events, milliseconds.
pub const WEBHOOK_POLL_MS: u64 = 100;
/// How long a rotated-out webhook secret keeps signing, seconds.
pub const WEBHOOK_ROTATION_OVERLAP_SECONDS: i64 = 24 * 3600;
/// Outbox events a webhook worker reads at once (its memory bound).
pub const WEBHOOK_PAGE: u32 = 256;
/// Webhook deliveries in flight at once for an endpoint that takes them
/// out of order.
pub const WEBHOOK_PARALLEL: usize = 16;
/// Largest receipt included in an event, bytes; a larger one is fetched by
/// id.
pub const MAX_EVENT_RECEIPT: usize = 64 * 1024;
/// Longest `Retry-After` a webhook consumer can ask for, seconds.
pub const MAX_WEBHOOK_RETRY_AFTER: u64 = 24 * 3600;
/// Default niceness of the webhook sending threads (`--webhook-niceness`):
/// decisions run at 0.
pub const DEFAULT_WEBHOOK_NICENESS: u8 = 10;

/// Most requests in progress at once on one HTTP/2 connection
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`).
pub const H2_MAX_STREAMS: u32 = 128;

/// Largest header list an HTTP/2 request may carry, bytes
/// (`SETTINGS_MAX_HEADER_LIST_SIZE`).
pub const H2_MAX_HEADER_BYTES: u32 = 32 * 1024;

/// How often an HTTP/2 connection is pinged, and how long an answer to the
/// ping is awaited before the connection is dropped, milliseconds.
pub const H2_KEEPALIVE_MS: u64 = 20_000;

/// Most bulk reads (ledger pages and exports) whose answers are in
/// progress at once: each may hold a page of entries in memory until its
/// client has read it, so their number is what bounds that memory
/// whatever the clients' flow control does. Beyond it a read is told
/// `503 reads-full`.
pub const MAX_BULK_READS: usize = 64;

/// Most of those one client address may hold at once: a quarter, so that
/// one client cannot take every one.
pub const MAX_BULK_READS_PER_ADDRESS: usize = MAX_BULK_READS / 4;

/// The bytes of entries a ledger page or a page of an export holds at most
/// (and at least one entry): its entries are read from the store a few at
/// a time until it holds this many. With [`MAX_BULK_READS`] it bounds the
/// memory bulk reads hold however large entries are.
pub const BULK_PAGE_BYTES: usize = 512 * 1024;

/// `Retry-After` of a `503 reads-full`, seconds.
pub const BULK_RETRY_AFTER: u32 = 1;

/// `Retry-After` (seconds) of `503 ledger-unavailable`: the ledger's
/// database is out of reach or out of room.
pub const LEDGER_RETRY_AFTER: u32 = 1;

/// Largest piece a bulk answer is handed to the connection in, bytes:
/// over HTTP/2 the next piece is made ready only when the client's flow
/// control lets the last one go, so a stalled stream holds one piece.
pub const BULK_CHUNK: usize = 16 * 1024;
