//! skiff-runtime (skeleton)
