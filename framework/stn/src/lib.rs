//! Tokio driver and public Client API of the Phobos STN.
