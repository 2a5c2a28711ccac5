//! The Alipay gateway simulator (filled in by the next commit).
