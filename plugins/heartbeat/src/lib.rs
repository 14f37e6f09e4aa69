//! Heartbeat policies: Mars's fixed 210 s interval and the smart heartbeat.
