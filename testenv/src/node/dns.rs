//! Asks a DNS server for a name's A record, over UDP, as a resolver would:
//! how the node knows CoreDNS answers (from the host, through kube-proxy's
//! rules for the DNS Service's ClusterIP).

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// A query for `name`'s A record, with recursion desired. No client required.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; 1 question
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    q
}

/// The A records of an answer to [`query`] with `id`. No client required.
pub fn a_records(id: u16, answer: &[u8]) -> Result<Vec<Ipv4Addr>> {
    if answer.len() < 12 || answer[..2] != id.to_be_bytes() {
        bail!("not an answer to query {id}");
    }
    let rcode = answer[3] & 0x0f;
    if rcode != 0 {
        bail!("DNS error code {rcode}");
    }
    let questions = u16::from_be_bytes([answer[4], answer[5]]);
    let answers = u16::from_be_bytes([answer[6], answer[7]]);
    let mut at = 12;
    let skip_name = |mut at: usize| -> Result<usize> {
        loop {
            let Some(&len) = answer.get(at) else {
                bail!("truncated name")
            };
            if len & 0xc0 == 0xc0 {
                return Ok(at + 2);
            }
            if len == 0 {
                return Ok(at + 1);
            }
            at += 1 + len as usize;
        }
    };
    for _ in 0..questions {
        at = skip_name(at)? + 4;
    }
    let mut found = Vec::new();
    for _ in 0..answers {
        at = skip_name(at)?;
        let Some(rr) = answer.get(at..at + 10) else {
            bail!("truncated record")
        };
        let (kind, len) = (
            u16::from_be_bytes([rr[0], rr[1]]),
            u16::from_be_bytes([rr[8], rr[9]]) as usize,
        );
        at += 10;
        let Some(data) = answer.get(at..at + len) else {
            bail!("truncated record data")
        };
        if kind == 1 && len == 4 {
            found.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += len;
    }
    Ok(found)
}

/// Asks `server` for `name` until it answers `expected`, or fails after `timeout`.
pub fn wait_until_answers(
    server: &str,
    name: &str,
    expected: Ipv4Addr,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut id: u16 = 0x5a5a;
    loop {
        id = id.wrapping_add(1);
        let last = match ask(server, name, id) {
            Ok(addrs) if addrs.contains(&expected) => return Ok(()),
            Ok(addrs) => format!("answered {addrs:?}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("DNS at {server} did not answer {name} = {expected} within {timeout:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn ask(server: &str, name: &str, id: u16) -> Result<Vec<Ipv4Addr>> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    socket.send_to(&query(id, name), (server, 53))?;
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf)?;
    a_records(id, &buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_with_one_a_record_is_read() {
        let mut answer = query(7, "kubernetes.default");
        answer[2] = 0x85; // QR, AA, RD
        answer[3] = 0x80; // RA, NOERROR
        answer[7] = 1; // one answer
        answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 1]);
        assert_eq!(
            a_records(7, &answer).unwrap(),
            [Ipv4Addr::new(10, 96, 0, 1)]
        );
    }

    #[test]
    fn an_error_or_another_id_is_not_an_answer() {
        let mut answer = query(7, "nowhere");
        answer[3] = 0x83; // NXDOMAIN
        assert!(
            a_records(7, &answer)
                .unwrap_err()
                .to_string()
                .contains("code 3")
        );
        assert!(a_records(8, &query(7, "x")).is_err());
    }
}
