//! skiff-pki (skeleton)
