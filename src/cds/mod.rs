//! The CDS Hooks 2.0 contract, as data: the wire types (requests, responses, cards, feedback,
//! errors), prefetch templates and each hook's required context, and the [`Caller`] a call
//! is made for.
//!
//! It is the leaf of the crate: it imports nothing of bedside, so the HTTP edge (`hooks`), the
//! policy (`services`, `cards`) and the record (`store`) can all speak it without reaching up
//! into one another.

mod caller;
pub mod context;
pub mod prefetch;
pub mod wire;

pub use caller::Caller;
