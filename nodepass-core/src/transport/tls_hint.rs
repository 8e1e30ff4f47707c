//! What to do about a TLS failure: a hint appended to the error text, naming the URL parameter
//! that fixes it (`ca=`, `sni=`) or what is wrong with the certificate.

use std::fmt;
use std::io;

use rustls::{AlertDescription, CertificateError};

/// An I/O error from a TLS handshake, displayed with a hint when one applies.
pub(crate) struct Explained<'a>(pub(crate) &'a io::Error);

impl fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        if let Some(h) = hint(self.0) {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

/// The hint for `err`, if it wraps a rustls error we can explain.
pub(crate) fn hint(err: &io::Error) -> Option<&'static str> {
    let tls = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    match tls {
        rustls::Error::InvalidCertificate(c) => certificate_hint(c),
        rustls::Error::AlertReceived(
            AlertDescription::UnknownCA | AlertDescription::BadCertificate,
        ) => Some(
            "the client does not trust this server's certificate: give the client \
             ca=PATH, the PEM file of the CA that signed it",
        ),
        rustls::Error::AlertReceived(AlertDescription::CertificateExpired) => {
            Some("the client found this server's certificate expired")
        }
        _ => None,
    }
}

fn certificate_hint(c: &CertificateError) -> Option<&'static str> {
    match c {
        CertificateError::UnknownIssuer => Some(
            "the server certificate is not signed by a CA this client trusts: add ca=PATH, \
             the PEM file of the CA that signed it",
        ),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            Some(
                "the server certificate does not name the address this client dials: add \
                 sni=NAME with a name from the certificate's subjectAltName",
            )
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            Some("the server certificate has expired: renew it on the server")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            Some("the server certificate is not valid yet: check both clocks")
        }
        CertificateError::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => Some(
            "the server presents a CA certificate (basicConstraints CA:TRUE, which \
             `openssl req -x509` makes by default): create a CA, sign a separate server \
             certificate with it for the server's crt=/key=, and give the client ca= (see \
             the README, TLS with a private CA)",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn hints_name_the_parameter() {
        let e = io(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(Explained(&e).to_string().contains("ca=PATH"));
        let e = io(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ));
        assert!(Explained(&e).to_string().contains("sni=NAME"));
        let e = io(rustls::Error::AlertReceived(AlertDescription::UnknownCA));
        assert!(Explained(&e).to_string().contains("ca=PATH"));
        let e = io::Error::other("plain");
        assert_eq!(Explained(&e).to_string(), "plain");
    }
}
