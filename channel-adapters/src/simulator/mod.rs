pub mod alipay;
