//! In-process collectives (to be written).
