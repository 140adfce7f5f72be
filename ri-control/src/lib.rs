//! In-target control library (placeholder).
