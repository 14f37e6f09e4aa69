//! Virtual-time scenario tests of the engine.
