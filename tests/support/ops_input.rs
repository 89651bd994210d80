//! Turns fuzzer bytes into a sequence of model operations (for the `ops_model` fuzz
//! target and its regression tests): one tag byte per operation, then the bytes of its
//! parameters. Running out of bytes ends the sequence.

#![allow(dead_code)]

use super::model::Op;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
    fn tok(&mut self) -> Option<usize> {
        self.u8().map(usize::from)
    }
    fn user(&mut self) -> Option<usize> {
        self.u8().map(|b| usize::from(b % 3))
    }
}

/// Number of distinct operation tags.
pub const TAGS: u8 = 26;

pub fn ops(data: &[u8], max: usize) -> Vec<Op> {
    let mut b = Bytes(data);
    let mut out = Vec::new();
    while out.len() < max {
        let Some(tag) = b.u8() else { break };
        let op = (|| {
            Some(match tag % TAGS {
                0 => {
                    let flags = b.u8()?;
                    Op::Create {
                        user: (flags & 3 != 3).then_some(usize::from(flags & 3)),
                        idle: flags & 4 != 0,
                        with: if flags & 8 != 0 { Some(b.u32()?) } else { None },
                    }
                }
                1 => Op::Get(b.tok()?),
                2 => Op::Peek(b.tok()?),
                3 => Op::Put(b.tok()?, b.u8()? % 4, b.u32()?),
                4 => Op::Remove(b.tok()?, b.u8()? % 4),
                5 => Op::Update(b.tok()?),
                6 => Op::Save {
                    tok: b.tok()?,
                    stale: b.u8()? & 1 == 1,
                },
                7 => Op::Touch(b.tok()?),
                8 => Op::Extend(b.tok()?, b.u16()? % 4000),
                9 => Op::Rotate(b.tok()?),
                10 => Op::Bind(b.tok()?, b.user()?),
                11 => Op::Unbind(b.tok()?),
                12 => Op::End(b.tok()?),
                13 => Op::EndById(b.tok()?),
                14 => Op::Revoke(b.user()?),
                15 => Op::SessionsOf(b.user()?),
                16 => Op::Advance(b.u16()? % 4000),
                17 => Op::Reap,
                18 => Op::Clear,
                19 => Op::Reopen,
                20 => Op::Compact,
                21 => Op::OpenInstance(b.tok()?),
                22 => Op::EndInstance(b.tok()?, b.u8()?),
                23 => Op::RevokeOthers(b.tok()?),
                24 => Op::RevokeBefore(b.user()?, b.u16()? as i16 % 4000),
                _ => Op::SetExpiry(b.tok()?, b.u16()? as i16 % 4000),
            })
        })();
        match op {
            Some(op) => out.push(op),
            None => break,
        }
    }
    out
}
