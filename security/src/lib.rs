//! Transport security for Strand's brokers and clients.
//!
//! - [`tls`]: TLS contexts built from PEM files and reloaded when the files
//!   change ([`TlsContext`]); the server side accepts connections and names
//!   the certificate's [`Principal`] once per connection, the client side
//!   dials through a [`Dialer`] that tonic channels use.
//! - [`principal`]: who a connection or request acts for.
//! - [`dev_ca`]: a development certificate authority (what `strand cert`
//!   writes): a CA, broker certificates naming their node id, client
//!   certificates naming their user.
//!
//! The crate has one crypto provider, rustls's `ring`, chosen explicitly
//! (never the process default), so two providers can never disagree.

pub mod dev_ca;
mod error;
pub mod principal;
pub mod scram;
pub mod tls;

pub use error::{Result, SecurityError};
pub use principal::Principal;
pub use tls::{ClientAuth, Dialer, TlsContext, TlsFiles};
