//! Reads a certificate's notAfter from its DER encoding, for the expiry metric of certificates made elsewhere.
//!
//! Only the path to `tbsCertificate.validity` is walked; everything else is skipped by length, so no X.509 parser is
//! needed for one timestamp.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// notAfter of a DER certificate, or `None` when the encoding is not what X.509 prescribes.
pub fn not_after(der: &[u8]) -> Option<OffsetDateTime> {
    let (tag, cert, _) = element(der)?;
    expect(tag, 0x30)?;
    let (tag, tbs, _) = element(cert)?;
    expect(tag, 0x30)?;
    let mut rest = tbs;
    // Optional explicit [0] version.
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        rest = element(rest)?.2;
    }
    let (tag, validity, _) = element(rest)?;
    expect(tag, 0x30)?;
    let (_, _, after_not_before) = element(validity)?;
    let (tag, value, _) = element(after_not_before)?;
    parse_time(tag, value)
}

fn expect(tag: u8, wanted: u8) -> Option<()> {
    (tag == wanted).then_some(())
}

/// Splits one DER element off `input`: (tag, contents, remainder).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18).
fn parse_time(tag: u8, value: &[u8]) -> Option<OffsetDateTime> {
    let text = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: i32 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let num = |i: usize| rest.get(i..i + 2)?.parse::<u8>().ok();
    let date = Date::from_calendar_date(year, Month::try_from(num(0)?).ok()?, num(2)?).ok()?;
    let time = Time::from_hms(num(4)?, num(6)?, num(8)?).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{Lifetimes, Material};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn reads_the_expiry_rcgen_wrote() {
        let now = OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).unwrap();
        let m = Material::generate(&["a.example".to_string()], Lifetimes::default(), now).unwrap();
        let der = CertificateDer::from_pem_slice(m.cert.as_bytes()).unwrap();
        assert_eq!(not_after(&der), Some(m.cert_not_after));
        // Past 2049 X.509 switches to GeneralizedTime.
        let far =
            Lifetimes { ca: Lifetimes::default().ca * 10, cert: Lifetimes::default().ca * 5, ..Lifetimes::default() };
        let m = Material::generate(&["a.example".to_string()], far, now).unwrap();
        let der = CertificateDer::from_pem_slice(m.cert.as_bytes()).unwrap();
        assert_eq!(not_after(&der), Some(m.cert_not_after));
        assert!(m.cert_not_after.year() > 2050);
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x82, 0xff]), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x02, 0x01, 0x01]), None);
    }
}
