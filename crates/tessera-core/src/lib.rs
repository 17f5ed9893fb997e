//! Tessera's domain: accounts, licenses, entitlements and the rules of consumption.
//!
//! Nothing here performs IO or reads the wall clock: callers pass `now` in. The
//! license types serialize to the AWS License Manager JSON shapes, which is also
//! how a license version is stored.

#[macro_use]
mod macros;

pub mod clock;
pub mod consumption;
pub mod environment;
pub mod grant;
pub mod ids;
pub mod license;
pub mod timefmt;
pub mod units;
pub mod validate;

pub use clock::Clock;
pub use ids::{AccountId, GrantArn, LicenseArn};
pub use units::{Units, MAX_UNITS};
pub use validate::ValidationError;
