//! skiff-store (skeleton)
