//! Small pieces every engine shares and none owns.
//!
//! Each engine (`embed`, `memory`, `query`, `agents`) keeps its own types
//! and reaches another only through that engine's public surface. What
//! several of them need and that belongs to none lives here, free of
//! gRPC and of any engine:
//!
//! - [`clock`]: wall-clock time as Unix milliseconds, the unit the store
//!   and the events keep.
//! - [`vector`]: vector maths (L2 normalisation).
//! - [`sync`]: the one policy for locks a panic left poisoned.
//! - [`blocking`]: running store calls and other blocking work on tokio's
//!   blocking pool.
//! - [`page`]: the one page-size policy and the [`page::Page`] type of
//!   every paged list.
//! - [`stats`]: counter arithmetic (hit rates).
//! - [`timing`]: where the time of one request went.
//! - [`priority`]: background threads giving way to requests.

pub mod blocking;
pub mod clock;
pub mod page;
pub mod priority;
pub mod stats;
pub mod sync;
pub mod timing;
pub mod vector;
