//! Sans-IO core of the Phobos signalling transmission network.
