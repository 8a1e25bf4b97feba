//! Layer 3, the base: what every side effect goes through. Connections with the platform's
//! timeouts, the secret key and random secrets, the local cluster's certificates.

pub mod certs;
pub mod connection;
pub mod kept;
pub mod secret;
