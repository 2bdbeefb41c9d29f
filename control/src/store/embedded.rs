//! embedded adapter
