//! Turns fuzzer bytes into a sequence of model operations (for the `ops_model` fuzz
//! target and its regression tests): one tag byte per operation, then the bytes of its
//! parameters. Running out of bytes ends the sequence.

#![allow(dead_code)]

use super::model::{ADDRESSES, METHODS, Op, USER_AGENTS};

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
    /// A sign-in's methods: a count byte (one to three methods; with its top bit set,
    /// one to ten, so that malformed and too-long sign-ins come up), then one byte per
    /// method (an index into `METHODS`; the one past the end is no method name).
    fn methods(&mut self) -> Option<Vec<u8>> {
        let c = self.u8()?;
        let n = if c & 0x80 != 0 {
            1 + (c & 0x7f) % 10
        } else {
            1 + c % 3
        };
        (0..n)
            .map(|_| self.u8().map(|m| m % (METHODS.len() as u8 + 1)))
            .collect()
    }
    fn level(&mut self) -> Option<u8> {
        self.u8().map(|b| b % 4)
    }
}

/// Number of distinct operation tags. New operations take new tags at the end, so that
/// a tag keeps its meaning (tag 0 is a create without sign-in or device, as before
/// those existed; tag 31 is one with them).
pub const TAGS: u8 = 33;

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
                        sign_in: None,
                        device: None,
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
                25 => Op::SetExpiry(b.tok()?, b.u16()? as i16 % 4000),
                26 => Op::LoginWith(b.tok()?, b.user()?, b.methods()?, b.level()?),
                27 => Op::StepUp(b.tok()?, b.methods()?, b.level()?),
                28 => Op::RevokeWhereMethod(b.user()?, b.u8()? % (METHODS.len() as u8 + 1)),
                29 => Op::RevokeBelow(b.user()?, b.level()?),
                30 => Op::SeenFrom(b.tok()?, b.u8()? % USER_AGENTS, b.u8()? % ADDRESSES),
                31 => {
                    // As tag 0, and bit 4 of the flags adds a sign-in, bit 5 a device.
                    let flags = b.u8()?;
                    Op::Create {
                        user: (flags & 3 != 3).then_some(usize::from(flags & 3)),
                        idle: flags & 4 != 0,
                        with: if flags & 8 != 0 { Some(b.u32()?) } else { None },
                        sign_in: if flags & 16 != 0 {
                            Some((b.methods()?, b.level()?))
                        } else {
                            None
                        },
                        device: if flags & 32 != 0 {
                            Some((b.u8()? % USER_AGENTS, b.u8()? % ADDRESSES))
                        } else {
                            None
                        },
                    }
                }
                _ => Op::Login(b.tok()?, b.user()?),
            })
        })();
        match op {
            Some(op) => out.push(op),
            None => break,
        }
    }
    out
}
