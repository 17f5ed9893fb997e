//! One keep-alive HTTP/1.1 connection that sends SigV4-signed JSON requests
//! with little work per request: the benchmark's load generator, whose own CPU
//! shares the machine with the server it measures.
//!
//! Requests are written in one `write` each and answers are parsed in place
//! with `httparse`; the signing key is derived once per day. Everything else a
//! client needs (redirects, retries, TLS) is left to [`crate::Client`].

use std::io::Write as _;

use tessera_sigv4::Signer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{ClientError, Credentials};

/// An answer's status and body, borrowed from the connection's buffer.
pub struct Answer<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

pub struct Connection {
    addr: String,
    stream: Option<TcpStream>,
    signer: Signer,
    out: Vec<u8>,
    buf: Vec<u8>,
}

/// Largest answer head accepted.
const MAX_HEAD: usize = 16 * 1024;

impl Connection {
    /// A connection to `endpoint` (`http://HOST:PORT`), opened on first use.
    pub fn new(endpoint: &str, creds: &Credentials) -> Result<Self, ClientError> {
        let addr = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| ClientError::Protocol(format!("{endpoint}: only http:// endpoints are supported")))?
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            addr,
            stream: None,
            signer: Signer::new(&creds.access_key_id, &creds.secret_access_key, "us-east-1"),
            out: Vec::with_capacity(2048),
            buf: Vec::with_capacity(8192),
        })
    }

    /// POSTs `body` with `X-Amz-Target: target`; returns the answer, whatever its status.
    pub async fn call(&mut self, target: &str, body: &[u8]) -> Result<Answer<'_>, ClientError> {
        self.encode(target, body);
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(ClientError::Protocol("no connection".into()));
        };
        if let Err(e) = stream.write_all(&self.out).await {
            self.stream = None;
            return Err(e.into());
        }
        match read_answer(stream, &mut self.buf).await {
            Ok((status, head, len, close)) => {
                if close {
                    self.stream = None;
                }
                Ok(Answer {
                    status,
                    body: &self.buf[head..head + len],
                })
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    fn encode(&mut self, target: &str, body: &[u8]) {
        let (date, authorization) = crate::sign_json_post(&mut self.signer, &self.addr, target, body);
        self.out.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(
            self.out,
            "POST / HTTP/1.1\r\nhost: {}\r\ncontent-type: {}\r\nx-amz-target: {target}\r\n\
             x-amz-date: {date}\r\nauthorization: {authorization}\r\ncontent-length: {}\r\n\r\n",
            self.addr,
            crate::JSON_CONTENT_TYPE,
            body.len()
        );
        self.out.extend_from_slice(body);
    }
}

/// Reads one answer into `buf`: (status, where the body starts, its length, whether the server closes).
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(u16, usize, usize, bool), ClientError> {
    buf.clear();
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().max(4096));
        }
        let n = stream.read_buf(buf).await?;
        if n == 0 {
            return Err(ClientError::Protocol("the server closed the connection".into()));
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => return Err(ClientError::Protocol("answer head too large".into())),
            Err(e) => return Err(ClientError::Protocol(e.to_string())),
        };
        let status = resp.code.unwrap_or(0);
        let mut len = None;
        let mut close = false;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                len = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok());
            } else if h.name.eq_ignore_ascii_case("connection") {
                close = h.value.eq_ignore_ascii_case(b"close");
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(ClientError::Protocol("chunked answers are not supported".into()));
            }
        }
        let len = len.ok_or_else(|| ClientError::Protocol("the answer has no content-length".into()))?;
        while buf.len() < head + len {
            buf.reserve(head + len - buf.len());
            if stream.read_buf(buf).await? == 0 {
                return Err(ClientError::Protocol(
                    "the server closed the connection mid-answer".into(),
                ));
            }
        }
        return Ok((status, head, len, close));
    }
}
