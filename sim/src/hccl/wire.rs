//! What a rank tells its peers about its side of a collective: a header of little-endian `u64`
//! words, followed by the payload bytes the peers read from.
//!
//! Header: `[MAGIC, kind, elem, op, count, root, n, send_counts × n, recv_counts × n, payload_len]`.
//! A rank whose own side is invalid publishes kind [`Kind::Failed`] with its message as payload, so
//! that every rank fails the collective instead of waiting for it.
use crate::error::SimError;

use super::dtype::{Elem, ReduceOp};

const MAGIC: u64 = 0x4853_4343_4c31_0001;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    AllReduce = 1,
    AllGather = 2,
    ReduceScatter = 3,
    Broadcast = 4,
    AlltoAllV = 5,
    Send = 6,
    Failed = 255,
}

impl Kind {
    fn from_word(w: u64) -> Option<Kind> {
        Some(match w {
            1 => Kind::AllReduce,
            2 => Kind::AllGather,
            3 => Kind::ReduceScatter,
            4 => Kind::Broadcast,
            5 => Kind::AlltoAllV,
            6 => Kind::Send,
            255 => Kind::Failed,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::AllReduce => "HcclAllReduce",
            Kind::AllGather => "HcclAllGather",
            Kind::ReduceScatter => "HcclReduceScatter",
            Kind::Broadcast => "HcclBroadcast",
            Kind::AlltoAllV => "HcclAlltoAllV",
            Kind::Send => "HcclSend",
            Kind::Failed => "a failed call",
        }
    }
}

fn elem_word(e: Elem) -> u64 {
    match e {
        Elem::I8 => 1,
        Elem::I16 => 2,
        Elem::I32 => 3,
        Elem::I64 => 4,
        Elem::U8 => 5,
        Elem::U16 => 6,
        Elem::U32 => 7,
        Elem::U64 => 8,
        Elem::F16 => 9,
        Elem::Bf16 => 10,
        Elem::F32 => 11,
        Elem::F64 => 12,
        Elem::Opaque(n) => 0x100 + n as u64,
    }
}

fn word_elem(w: u64) -> Option<Elem> {
    Some(match w {
        1 => Elem::I8,
        2 => Elem::I16,
        3 => Elem::I32,
        4 => Elem::I64,
        5 => Elem::U8,
        6 => Elem::U16,
        7 => Elem::U32,
        8 => Elem::U64,
        9 => Elem::F16,
        10 => Elem::Bf16,
        11 => Elem::F32,
        12 => Elem::F64,
        w if (0x101..0x200).contains(&w) => Elem::Opaque((w - 0x100) as usize),
        _ => return None,
    })
}

fn op_word(op: Option<ReduceOp>) -> u64 {
    match op {
        None => 0,
        Some(ReduceOp::Sum) => 1,
        Some(ReduceOp::Prod) => 2,
        Some(ReduceOp::Max) => 3,
        Some(ReduceOp::Min) => 4,
    }
}

fn word_op(w: u64) -> Option<Option<ReduceOp>> {
    Some(match w {
        0 => None,
        1 => Some(ReduceOp::Sum),
        2 => Some(ReduceOp::Prod),
        3 => Some(ReduceOp::Max),
        4 => Some(ReduceOp::Min),
        _ => return None,
    })
}

/// The shape of one rank's call: what every rank of a collective must agree on (AlltoAllV's
/// per-peer counts are checked against each other instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Desc {
    pub kind: Kind,
    pub elem: Elem,
    pub op: Option<ReduceOp>,
    pub count: u64,
    pub root: u64,
    pub send_counts: Vec<u64>,
    pub recv_counts: Vec<u64>,
}

impl Desc {
    pub(crate) fn new(kind: Kind, elem: Elem, count: u64) -> Desc {
        Desc {
            kind,
            elem,
            op: None,
            count,
            root: 0,
            send_counts: Vec::new(),
            recv_counts: Vec::new(),
        }
    }

    /// The header for a payload of `payload_len` bytes.
    pub(crate) fn header(&self, payload_len: usize) -> Vec<u8> {
        let mut w = vec![
            MAGIC,
            self.kind as u64,
            elem_word(self.elem),
            op_word(self.op),
            self.count,
            self.root,
            self.send_counts.len() as u64,
        ];
        w.extend(&self.send_counts);
        w.extend(&self.recv_counts);
        w.push(payload_len as u64);
        w.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Parses a header; returns the description and the byte offset of the payload.
    pub(crate) fn parse(bytes: &[u8]) -> Result<(Desc, usize), SimError> {
        let bad = || SimError::Internal("HCCL channel: a malformed message".into());
        let word = |i: usize| -> Result<u64, SimError> {
            bytes
                .get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(bad)
        };
        if word(0)? != MAGIC {
            return Err(bad());
        }
        let kind = Kind::from_word(word(1)?).ok_or_else(bad)?;
        let elem = word_elem(word(2)?).ok_or_else(bad)?;
        let op = word_op(word(3)?).ok_or_else(bad)?;
        let n = usize::try_from(word(6)?)
            .ok()
            .filter(|&n| n <= 1 << 16)
            .ok_or_else(bad)?;
        let send_counts = (0..n).map(|i| word(7 + i)).collect::<Result<_, _>>()?;
        let recv_counts = (0..n).map(|i| word(7 + n + i)).collect::<Result<_, _>>()?;
        let desc = Desc {
            kind,
            elem,
            op,
            count: word(4)?,
            root: word(5)?,
            send_counts,
            recv_counts,
        };
        Ok((desc, (8 + 2 * n) * 8))
    }

    /// Header bytes for `n` per-peer counts (the prefix [`Desc::parse`] needs).
    pub(crate) fn header_len(n: usize) -> usize {
        (8 + 2 * n) * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let mut d = Desc::new(Kind::AlltoAllV, Elem::Opaque(1), 0);
        d.send_counts = vec![1, 2, 3];
        d.recv_counts = vec![4, 5, 6];
        d.op = Some(ReduceOp::Max);
        let h = d.header(99);
        assert_eq!(h.len(), Desc::header_len(3));
        let (back, off) = Desc::parse(&h).unwrap();
        assert_eq!((back, off), (d, h.len()));
        assert!(Desc::parse(&h[..20]).is_err());
    }
}
