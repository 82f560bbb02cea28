//! skiff-protobuf (skeleton)
