//! Default AuthCheck plugins: no auth, and a token identify check.
