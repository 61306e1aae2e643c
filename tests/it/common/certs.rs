//! Certificates for TLS tests, made by rcgen: a CA and leaves for localhost/127.0.0.1.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType, SerialNumber};

/// A test CA made by rcgen.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

pub fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A leaf for `localhost`/127.0.0.1 with a chosen serial: (cert PEM, key PEM).
pub fn leaf(ca: &Ca, cn: &str, serial: u64) -> (String, String) {
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    p.distinguished_name.push(DnType::CommonName, cn);
    p.serial_number = Some(SerialNumber::from(serial));
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}
