//! CPU backend (placeholder until the backend issue lands).
