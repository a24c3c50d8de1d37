//! A small AML decoder for tests: enough of the grammar to read back what
//! our DSDT holds (Scope, Device, Name, and data objects: integers,
//! strings, buffers, packages), and the resource descriptors in a _CRS
//! buffer. Anything else is an error, so a test notices unexpected AML.

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    Str(String),
    Buffer(Vec<u8>),
    Package(Vec<Value>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A Device or Scope with its (absolute, dotted) path and contents.
    Device {
        path: String,
        children: Vec<Node>,
    },
    Name {
        path: String,
        value: Value,
    },
}

/// Resource descriptors as in a _CRS buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    Io {
        min: u16,
        max: u16,
        align: u8,
        len: u8,
    },
    IrqMask(u16),
    Memory32Fixed {
        base: u32,
        len: u32,
    },
    /// Word/DWord/QWord address space: kind 0 memory, 1 I/O, 2 bus number.
    Address {
        kind: u8,
        min: u64,
        max: u64,
        len: u64,
    },
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.data.get(self.pos).ok_or("unexpected end of AML")?;
        self.pos += 1;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).ok_or("overflow")?;
        let s = self
            .data
            .get(self.pos..end)
            .ok_or("unexpected end of AML")?;
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64, String> {
        Ok(self
            .bytes(n)?
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// A PkgLength; returns the end position of the package.
    fn pkg_end(&mut self) -> Result<usize, String> {
        let start = self.pos;
        let lead = self.byte()?;
        let follow = usize::from(lead >> 6);
        let mut len = if follow == 0 {
            usize::from(lead & 0x3f)
        } else {
            usize::from(lead & 0x0f)
        };
        for i in 0..follow {
            len |= usize::from(self.byte()?) << (4 + 8 * i);
        }
        let end = start + len;
        if end > self.data.len() {
            return Err(format!("package at {start} runs past the end"));
        }
        Ok(end)
    }

    fn name_seg(&mut self) -> Result<String, String> {
        let seg = self.bytes(4)?;
        String::from_utf8(seg.to_vec()).map_err(|e| e.to_string())
    }

    fn name_string(&mut self) -> Result<String, String> {
        let mut prefix = String::new();
        while let Some(&b @ (b'\\' | b'^')) = self.data.get(self.pos) {
            prefix.push(b as char);
            self.pos += 1;
        }
        let count = match self.byte()? {
            0x00 => 0,
            0x2e => 2,
            0x2f => usize::from(self.byte()?),
            _ => {
                self.pos -= 1;
                1
            }
        };
        let segs = (0..count)
            .map(|_| self.name_seg())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(prefix + &segs.join("."))
    }

    fn data_object(&mut self) -> Result<Value, String> {
        let op = self.byte()?;
        Ok(match op {
            0x00 => Value::Int(0),
            0x01 => Value::Int(1),
            0xff => Value::Int(u64::MAX),
            0x0a => Value::Int(self.uint(1)?),
            0x0b => Value::Int(self.uint(2)?),
            0x0c => Value::Int(self.uint(4)?),
            0x0e => Value::Int(self.uint(8)?),
            0x0d => {
                let rest = &self.data[self.pos..];
                let len = rest.iter().position(|&b| b == 0).ok_or("open string")?;
                let s = String::from_utf8(rest[..len].to_vec()).map_err(|e| e.to_string())?;
                self.pos += len + 1;
                Value::Str(s)
            }
            0x11 => {
                let end = self.pkg_end()?;
                let Value::Int(size) = self.data_object()? else {
                    return Err("buffer size is not an integer".into());
                };
                let bytes = self.data[self.pos..end].to_vec();
                if bytes.len() as u64 != size {
                    return Err(format!("buffer of {} bytes says {size}", bytes.len()));
                }
                self.pos = end;
                Value::Buffer(bytes)
            }
            0x12 => {
                let end = self.pkg_end()?;
                let count = self.byte()?;
                let mut elements = Vec::new();
                while self.pos < end {
                    elements.push(self.data_object()?);
                }
                if self.pos != end || elements.len() != usize::from(count) {
                    return Err(format!("package of {count} elements is malformed"));
                }
                Value::Package(elements)
            }
            _ => {
                return Err(format!(
                    "unsupported data object {op:#x} at {}",
                    self.pos - 1
                ))
            }
        })
    }

    fn term_list(&mut self, end: usize, scope: &str) -> Result<Vec<Node>, String> {
        let mut nodes = Vec::new();
        while self.pos < end {
            let at = self.pos;
            let op = self.byte()?;
            let node = match op {
                // NameOp
                0x08 => {
                    let path = join(scope, &self.name_string()?);
                    Node::Name {
                        path,
                        value: self.data_object()?,
                    }
                }
                // ScopeOp, or ExtOpPrefix DeviceOp.
                0x10 | 0x5b => {
                    if op == 0x5b && self.byte()? != 0x82 {
                        return Err(format!("unsupported extended op at {at}"));
                    }
                    let pkg_end = self.pkg_end()?;
                    let path = join(scope, &self.name_string()?);
                    let children = self.term_list(pkg_end, &path)?;
                    Node::Device { path, children }
                }
                _ => return Err(format!("unsupported op {op:#x} at {at}")),
            };
            nodes.push(node);
        }
        if self.pos != end {
            return Err(format!("term list overran its end {end}"));
        }
        Ok(nodes)
    }
}

fn join(scope: &str, name: &str) -> String {
    if let Some(abs) = name.strip_prefix('\\') {
        format!("\\{abs}")
    } else if scope == "\\" {
        format!("\\{name}")
    } else {
        format!("{scope}.{name}")
    }
}

/// Decode a definition block (the DSDT without its header).
pub fn parse(aml: &[u8]) -> Result<Vec<Node>, String> {
    let mut r = Reader { data: aml, pos: 0 };
    r.term_list(aml.len(), "\\")
}

/// Every node, depth first.
pub fn flatten(nodes: &[Node]) -> Vec<&Node> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(n);
        if let Node::Device { children, .. } = n {
            out.extend(flatten(children));
        }
    }
    out
}

/// The value of the Name object at `path` (e.g. `\_SB_.PCI0._CRS`).
pub fn find_name<'a>(nodes: &'a [Node], path: &str) -> Option<&'a Value> {
    flatten(nodes).into_iter().find_map(|n| match n {
        Node::Name { path: p, value } if p == path => Some(value),
        _ => None,
    })
}

/// Decode the resource descriptors of a resource template buffer, checking
/// that it ends with an end tag.
pub fn resources(buf: &[u8]) -> Result<Vec<Resource>, String> {
    let mut r = Reader { data: buf, pos: 0 };
    let mut out = Vec::new();
    loop {
        let tag = r.byte()?;
        if tag & 0x80 == 0 {
            let len = usize::from(tag & 7);
            let body = r.bytes(len)?.to_vec();
            match (tag >> 3) & 0xf {
                0x0f => {
                    if r.pos != buf.len() {
                        return Err("bytes after the end tag".into());
                    }
                    return Ok(out);
                }
                0x08 if len == 7 => out.push(Resource::Io {
                    min: u16::from_le_bytes([body[1], body[2]]),
                    max: u16::from_le_bytes([body[3], body[4]]),
                    align: body[5],
                    len: body[6],
                }),
                0x04 if len >= 2 => {
                    out.push(Resource::IrqMask(u16::from_le_bytes([body[0], body[1]])))
                }
                t => return Err(format!("unsupported small descriptor {t:#x}")),
            }
        } else {
            let len = r.uint(2)? as usize;
            let body = r.bytes(len)?.to_vec();
            let mut b = Reader {
                data: &body,
                pos: 0,
            };
            match tag & 0x7f {
                0x06 => {
                    b.byte()?;
                    out.push(Resource::Memory32Fixed {
                        base: b.uint(4)? as u32,
                        len: b.uint(4)? as u32,
                    });
                }
                t @ (0x07 | 0x08 | 0x0a) => {
                    let width = match t {
                        0x08 => 2,
                        0x07 => 4,
                        _ => 8,
                    };
                    let kind = b.byte()?;
                    b.bytes(2)?; // general and type-specific flags
                    let _granularity = b.uint(width)?;
                    let min = b.uint(width)?;
                    let max = b.uint(width)?;
                    let _translation = b.uint(width)?;
                    let len = b.uint(width)?;
                    out.push(Resource::Address {
                        kind,
                        min,
                        max,
                        len,
                    });
                }
                t => return Err(format!("unsupported large descriptor {t:#x}")),
            }
        }
    }
}
