//! etcd adapter
