//! SPDY/3.1, as far as Kubernetes' streaming uses it: the server side of a session on an
//! upgraded HTTP connection, on which the client opens streams (`SYN_STREAM`) and each
//! side sends data and half-closes with `FIN`.
//!
//! What this leaves out, as the Go implementation every Kubernetes client uses does:
//! flow control (`WINDOW_UPDATE` is read and ignored, windows are never waited on),
//! settings, server-pushed streams and credential frames.
//!
//! Frames (all integers big-endian):
//!
//! ```text
//! control: 1 | version:15 | type:16 | flags:8 | length:24 | payload
//! data:    0 | stream:31            | flags:8 | length:24 | payload
//! ```
//!
//! Header blocks of `SYN_STREAM`, `SYN_REPLY` and `HEADERS` are zlib streams, one per
//! direction for the whole session, primed with the dictionary of the SPDY/3 draft.

use std::collections::HashMap;
use std::io;
use std::sync::OnceLock;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The `Upgrade` token of a SPDY connection.
pub const PROTOCOL: &str = "SPDY/3.1";

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;

const FLAG_FIN: u8 = 0x01;

/// `RST_STREAM` status: the stream is not wanted.
pub const REFUSED_STREAM: u32 = 3;
/// `RST_STREAM` status: the stream was given up.
pub const CANCEL: u32 = 5;

/// The largest data frame this side sends.
const MAX_DATA_FRAME: usize = 32 * 1024;
/// The largest header block accepted once decompressed.
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Data frames queued for one stream's reader before the session stops reading.
const STREAM_QUEUE: usize = 16;

/// The zlib dictionary of SPDY/3 header blocks (draft 3, section 2.6.10.1): header names
/// and common values, each prefixed with its length, then a run of status lines, dates
/// and media types.
fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
            "accept-encoding", "accept-language", "accept-ranges", "age", "allow",
            "authorization", "cache-control", "connection", "content-base",
            "content-encoding", "content-language", "content-length", "content-location",
            "content-md5", "content-range", "content-type", "date", "etag", "expect",
            "expires", "from", "host", "if-match", "if-modified-since", "if-none-match",
            "if-range", "if-unmodified-since", "last-modified", "location", "max-forwards",
            "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
            "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade",
            "user-agent", "vary", "via", "warning", "www-authenticate", "method", "get",
            "status", "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie",
            "keep-alive", "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
            "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut dictionary = Vec::new();
        for word in WORDS {
            dictionary.extend_from_slice(&(word.len() as u32).to_be_bytes());
            dictionary.extend_from_slice(word.as_bytes());
        }
        dictionary.extend_from_slice(TAIL.as_bytes());
        dictionary
    })
}

/// A stream's headers: lower-case names; a name sent with several values appears once per
/// value.
pub type Headers = Vec<(String, String)>;

/// A frame as this side reads it.
#[derive(Debug, PartialEq)]
enum Frame {
    SynStream {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream: u32,
    },
    Ping(u32),
    GoAway,
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    /// Frames this side has no use for: SYN_REPLY, SETTINGS, HEADERS, WINDOW_UPDATE, …
    Ignored,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn be32(bytes: &[u8], at: usize) -> io::Result<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| invalid("SPDY frame too short"))
}

/// Reads header blocks: one zlib stream for the session.
struct HeaderReader {
    inflate: Decompress,
}

impl HeaderReader {
    fn new() -> HeaderReader {
        HeaderReader {
            inflate: Decompress::new(true),
        }
    }

    fn decode(&mut self, block: &[u8]) -> io::Result<Headers> {
        let mut plain = Vec::with_capacity(block.len() * 4);
        let mut input = block;
        loop {
            if plain.capacity() - plain.len() < 1024 {
                plain.reserve(4096);
            }
            let before = self.inflate.total_in();
            let result = self
                .inflate
                .decompress_vec(input, &mut plain, FlushDecompress::Sync);
            input = &input[(self.inflate.total_in() - before) as usize..];
            match result {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| invalid(format!("SPDY header dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return Err(invalid(format!("SPDY header block: {e}"))),
            }
            if plain.len() > MAX_HEADER_BLOCK {
                return Err(invalid("SPDY header block too large"));
            }
            // Done once the input is used up and the output had room to spare.
            if input.is_empty() && plain.len() < plain.capacity() {
                break;
            }
        }
        parse_header_block(&plain)
    }
}

fn parse_header_block(plain: &[u8]) -> io::Result<Headers> {
    let count = be32(plain, 0)? as usize;
    let mut at = 4;
    let field = |at: &mut usize| -> io::Result<String> {
        let len = be32(plain, *at)? as usize;
        let bytes = plain
            .get(*at + 4..*at + 4 + len)
            .ok_or_else(|| invalid("SPDY header block truncated"))?;
        *at += 4 + len;
        String::from_utf8(bytes.to_vec()).map_err(|_| invalid("SPDY header is not UTF-8"))
    };
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = field(&mut at)?.to_ascii_lowercase();
        let value = field(&mut at)?;
        for one in value.split('\0') {
            headers.push((name.clone(), one.to_string()));
        }
    }
    Ok(headers)
}

/// Writes header blocks: the other direction's zlib stream.
struct HeaderWriter {
    deflate: Compress,
}

impl HeaderWriter {
    fn new() -> io::Result<HeaderWriter> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(dictionary())
            .map_err(|e| invalid(format!("SPDY header dictionary: {e}")))?;
        Ok(HeaderWriter { deflate })
    }

    fn encode(&mut self, headers: &[(&str, &str)]) -> io::Result<Vec<u8>> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for text in [name, value] {
                plain.extend_from_slice(&(text.len() as u32).to_be_bytes());
                plain.extend_from_slice(text.as_bytes());
            }
        }
        let mut packed = Vec::with_capacity(plain.len() + 64);
        let mut input = plain.as_slice();
        loop {
            if packed.capacity() - packed.len() < 64 {
                packed.reserve(256);
            }
            let before = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(input, &mut packed, FlushCompress::Sync)
                .map_err(|e| invalid(format!("SPDY header block: {e}")))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            if input.is_empty()
                && packed.len() < packed.capacity()
                && matches!(status, Status::Ok | Status::BufError)
            {
                return Ok(packed);
            }
        }
    }
}

fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(payload);
    frame
}

fn data_frame(stream: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + data.len());
    frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    frame.push(if fin { FLAG_FIN } else { 0 });
    frame.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(data);
    frame
}

async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    headers: &mut HeaderReader,
) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let flags = head[4];
    let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await?;
    let fin = flags & FLAG_FIN != 0;
    if head[0] & 0x80 == 0 {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        return Ok(Some(Frame::Data {
            stream,
            fin,
            data: Bytes::from(payload),
        }));
    }
    let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
    if version != VERSION {
        return Err(invalid(format!("SPDY version {version} is not supported")));
    }
    let stream = || be32(&payload, 0).map(|id| id & 0x7fff_ffff);
    Ok(Some(match u16::from_be_bytes([head[2], head[3]]) {
        SYN_STREAM => Frame::SynStream {
            stream: stream()?,
            fin,
            headers: headers.decode(payload.get(10..).unwrap_or_default())?,
        },
        RST_STREAM => Frame::RstStream { stream: stream()? },
        PING => Frame::Ping(be32(&payload, 0)?),
        GOAWAY => Frame::GoAway,
        // Each header block advances the shared zlib stream, so it is read even when unused.
        HEADERS | SYN_REPLY => {
            headers.decode(payload.get(4..).unwrap_or_default())?;
            Frame::Ignored
        }
        _ => Frame::Ignored,
    }))
}

/// What a stream, or the session, asks the writer to send.
#[derive(Debug)]
enum Outgoing {
    Reply { stream: u32 },
    Data { stream: u32, data: Bytes, fin: bool },
    Reset { stream: u32, status: u32 },
    Ping(u32),
}

async fn write_frames<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut queue: mpsc::Receiver<Outgoing>,
) -> io::Result<()> {
    let mut headers = HeaderWriter::new()?;
    while let Some(outgoing) = queue.recv().await {
        let frame = match outgoing {
            Outgoing::Reply { stream } => {
                let mut payload = stream.to_be_bytes().to_vec();
                payload.extend(headers.encode(&[])?);
                control_frame(SYN_REPLY, 0, &payload)
            }
            Outgoing::Data { stream, data, fin } => data_frame(stream, fin, &data),
            Outgoing::Reset { stream, status } => {
                let mut payload = stream.to_be_bytes().to_vec();
                payload.extend_from_slice(&status.to_be_bytes());
                control_frame(RST_STREAM, 0, &payload)
            }
            Outgoing::Ping(id) => control_frame(PING, 0, &id.to_be_bytes()),
        };
        writer.write_all(&frame).await?;
        // Frames go out as they come: a stream's reply is what its client waits for.
        if queue.is_empty() {
            writer.flush().await?;
        }
    }
    writer.shutdown().await
}

/// The client reset the stream (or the connection went away) before finishing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream was reset")]
pub struct StreamReset;

/// A stream the client opened.
pub struct Stream {
    id: u32,
    headers: Headers,
    incoming: mpsc::Receiver<Result<Bytes, StreamReset>>,
    writer: StreamWriter,
}

impl Stream {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Splits the stream into what the client sends and what this side sends.
    pub fn split(self) -> (StreamReader, StreamWriter) {
        (
            StreamReader {
                incoming: self.incoming,
            },
            self.writer,
        )
    }
}

/// What the client sends on a stream.
pub struct StreamReader {
    incoming: mpsc::Receiver<Result<Bytes, StreamReset>>,
}

impl StreamReader {
    /// The next piece of data; `None` once the client finished its side.
    pub async fn recv(&mut self) -> Option<Result<Bytes, StreamReset>> {
        self.incoming.recv().await
    }
}

/// This side of a stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    queue: mpsc::Sender<Outgoing>,
}

fn session_closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the SPDY session has ended")
}

impl StreamWriter {
    async fn send(&self, outgoing: Outgoing) -> io::Result<()> {
        self.queue
            .send(outgoing)
            .await
            .map_err(|_| session_closed())
    }

    pub async fn write(&self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(MAX_DATA_FRAME) {
            self.send(Outgoing::Data {
                stream: self.id,
                data: Bytes::copy_from_slice(chunk),
                fin: false,
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes this side (`FIN`).
    pub async fn finish(&self) -> io::Result<()> {
        self.send(Outgoing::Data {
            stream: self.id,
            data: Bytes::new(),
            fin: true,
        })
        .await
    }

    pub async fn reset(&self, status: u32) -> io::Result<()> {
        self.send(Outgoing::Reset {
            stream: self.id,
            status,
        })
        .await
    }
}

/// Serves a SPDY session on `connection` until the client goes away, accepting every
/// stream the client opens (`SYN_REPLY`, which the client waits for before it opens the
/// next) and handing it to `on_stream`.
pub async fn serve<C>(connection: C, mut on_stream: impl FnMut(Stream)) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(connection);
    let (queue, outgoing) = mpsc::channel(64);
    let writing = tokio::spawn(write_frames(writer, outgoing));
    let mut header_reader = HeaderReader::new();
    let mut streams: HashMap<u32, mpsc::Sender<Result<Bytes, StreamReset>>> = HashMap::new();
    let result = loop {
        let frame = match read_frame(&mut reader, &mut header_reader).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        match frame {
            Frame::SynStream {
                stream,
                fin,
                headers,
            } => {
                if queue.send(Outgoing::Reply { stream }).await.is_err() {
                    break Ok(());
                }
                let (sender, incoming) = mpsc::channel(STREAM_QUEUE);
                if !fin {
                    streams.insert(stream, sender);
                }
                on_stream(Stream {
                    id: stream,
                    headers,
                    incoming,
                    writer: StreamWriter {
                        id: stream,
                        queue: queue.clone(),
                    },
                });
            }
            Frame::Data { stream, fin, data } => {
                if let Some(sender) = streams.get(&stream) {
                    // A reader that stopped listening just misses the data.
                    if !data.is_empty() && sender.send(Ok(data)).await.is_err() {
                        streams.remove(&stream);
                    }
                }
                if fin {
                    streams.remove(&stream);
                }
            }
            Frame::RstStream { stream } => {
                if let Some(sender) = streams.remove(&stream) {
                    let _ = sender.try_send(Err(StreamReset));
                }
            }
            // Pings the client starts (odd ids) are answered; ours would be even.
            Frame::Ping(id) if id % 2 == 1 => {
                if queue.send(Outgoing::Ping(id)).await.is_err() {
                    break Ok(());
                }
            }
            Frame::GoAway => break Ok(()),
            Frame::Ping(_) | Frame::Ignored => {}
        }
    };
    // The connection is gone: streams still open were not finished.
    for (_, sender) in streams.drain() {
        let _ = sender.try_send(Err(StreamReset));
    }
    drop(queue);
    // The writer ends once every stream's writer is gone.
    match writing.await {
        Ok(Err(e)) if result.is_ok() && e.kind() != io::ErrorKind::BrokenPipe => Err(e),
        _ => result,
    }
}

/// The client's side of the framing, for tests of servers built on this module.
#[doc(hidden)]
pub mod client {
    use super::*;

    /// Encodes the frames a client sends.
    pub struct Encoder {
        headers: HeaderWriter,
    }

    impl Encoder {
        pub fn new() -> io::Result<Encoder> {
            Ok(Encoder {
                headers: HeaderWriter::new()?,
            })
        }

        pub fn syn_stream(&mut self, stream: u32, headers: &[(&str, &str)]) -> io::Result<Vec<u8>> {
            let mut payload = stream.to_be_bytes().to_vec();
            payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            payload.extend(self.headers.encode(headers)?);
            Ok(control_frame(SYN_STREAM, 0, &payload))
        }

        pub fn data(&self, stream: u32, data: &[u8], fin: bool) -> Vec<u8> {
            data_frame(stream, fin, data)
        }

        pub fn reset(&self, stream: u32) -> Vec<u8> {
            let mut payload = stream.to_be_bytes().to_vec();
            payload.extend_from_slice(&CANCEL.to_be_bytes());
            control_frame(RST_STREAM, 0, &payload)
        }
    }

    /// A frame a server sent, as a client sees it.
    #[derive(Debug, PartialEq, Eq)]
    pub enum ServerFrame {
        Reply(u32),
        Data {
            stream: u32,
            data: Vec<u8>,
            fin: bool,
        },
        Reset(u32),
        Ping(u32),
        Other(u16),
    }

    /// Reads the next frame a server sent (decoding reply headers to keep the zlib
    /// stream in step).
    pub async fn read<R: AsyncRead + Unpin>(
        reader: &mut R,
        headers: &mut Decoder,
    ) -> io::Result<Option<ServerFrame>> {
        let mut head = [0u8; 8];
        match reader.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut payload = vec![0u8; length];
        reader.read_exact(&mut payload).await?;
        let fin = head[4] & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            return Ok(Some(ServerFrame::Data {
                stream: u32::from_be_bytes([head[0], head[1], head[2], head[3]]),
                data: payload,
                fin,
            }));
        }
        let id = be32(&payload, 0)?;
        Ok(Some(match u16::from_be_bytes([head[2], head[3]]) {
            SYN_REPLY => {
                headers.0.decode(&payload[4..])?;
                ServerFrame::Reply(id)
            }
            RST_STREAM => ServerFrame::Reset(id),
            PING => ServerFrame::Ping(id),
            other => ServerFrame::Other(other),
        }))
    }

    /// The client's header decompressor.
    pub struct Decoder(HeaderReader);

    impl Decoder {
        pub fn new() -> Decoder {
            Decoder(HeaderReader::new())
        }
    }

    impl Default for Decoder {
        fn default() -> Self {
            Decoder::new()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_dictionary_is_the_drafts() {
        let dictionary = dictionary();
        assert_eq!(dictionary.len(), 1423);
        assert!(dictionary.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(dictionary.ends_with(b",*,enq=0."));
    }

    #[test]
    fn header_blocks_survive_a_round_trip_on_one_zlib_stream() {
        let (mut writer, mut reader) = (HeaderWriter::new().unwrap(), HeaderReader::new());
        let first = writer
            .encode(&[("streamtype", "error"), ("port", "80")])
            .unwrap();
        let second = writer
            .encode(&[("streamtype", "data"), ("port", "80")])
            .unwrap();
        assert_eq!(
            reader.decode(&first).unwrap(),
            vec![
                ("streamtype".into(), "error".into()),
                ("port".into(), "80".into())
            ]
        );
        // The second block leans on the first's history: it decodes only in order.
        assert_eq!(reader.decode(&second).unwrap()[0].1, "data");
        assert!(reader
            .decode(&[])
            .unwrap_err()
            .to_string()
            .contains("short"));
    }

    #[test]
    fn several_values_of_a_name_are_split() {
        let mut plain = 1u32.to_be_bytes().to_vec();
        for text in ["Accept", "a\0b"] {
            plain.extend_from_slice(&(text.len() as u32).to_be_bytes());
            plain.extend_from_slice(text.as_bytes());
        }
        assert_eq!(
            parse_header_block(&plain).unwrap(),
            vec![
                ("accept".to_string(), "a".to_string()),
                ("accept".to_string(), "b".to_string())
            ]
        );
        assert!(parse_header_block(&plain[..10]).is_err());
    }

    #[tokio::test]
    async fn a_session_hands_over_streams_and_carries_their_data() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let (streams, mut accepted) = mpsc::unbounded_channel();
        let session = tokio::spawn(serve(server, move |stream| {
            let _ = streams.send(stream);
        }));
        let mut encoder = client::Encoder::new().unwrap();
        let mut decoder = client::Decoder::new();
        to_server
            .write_all(&encoder.syn_stream(1, &[("streamType", "data")]).unwrap())
            .await
            .unwrap();
        let stream = accepted.recv().await.unwrap();
        assert_eq!(
            (stream.id(), stream.header("streamtype")),
            (1, Some("data"))
        );
        let (mut reader, writer) = stream.split();
        assert_eq!(
            client::read(&mut from_server, &mut decoder).await.unwrap(),
            Some(client::ServerFrame::Reply(1))
        );
        to_server
            .write_all(&encoder.data(1, b"ping", true))
            .await
            .unwrap();
        assert_eq!(reader.recv().await, Some(Ok(Bytes::from_static(b"ping"))));
        assert_eq!(reader.recv().await, None, "FIN ends the client's side");
        writer.write(b"pong").await.unwrap();
        writer.finish().await.unwrap();
        for (data, fin) in [(b"pong".to_vec(), false), (vec![], true)] {
            assert_eq!(
                client::read(&mut from_server, &mut decoder).await.unwrap(),
                Some(client::ServerFrame::Data {
                    stream: 1,
                    data,
                    fin
                })
            );
        }
        // A second stream, reset by the client: its reader learns of it.
        to_server
            .write_all(&encoder.syn_stream(3, &[("streamType", "error")]).unwrap())
            .await
            .unwrap();
        let (mut reader, _writer) = accepted.recv().await.unwrap().split();
        to_server.write_all(&encoder.reset(3)).await.unwrap();
        assert_eq!(reader.recv().await, Some(Err(StreamReset)));
        // The client hangs up: the session ends.
        drop((to_server, from_server, writer, _writer));
        session.await.unwrap().unwrap();
    }
}
