//! Alipay end-to-end tests against the simulator (filled in by a later commit).
