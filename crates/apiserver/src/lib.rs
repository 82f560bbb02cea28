//! skiff-apiserver (skeleton)
