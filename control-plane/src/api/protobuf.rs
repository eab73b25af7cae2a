//! Kubernetes protobuf request bodies, turned into the JSON object they stand for.
//!
//! kubectl's typed commands (`create namespace|configmap|secret|deployment|service`, `run`,
//! `expose`, ...) send `application/vnd.kubernetes.protobuf` bodies and do not fall back to JSON
//! on a 415, so the server turns them into JSON here and handles them as JSON from then on.
//!
//! The body is the magic `k8s\0` and a `runtime.Unknown` whose `typeMeta` names the kind and whose
//! `raw` is the object's protobuf. Protobuf carries field numbers, not names, so a schema is
//! needed: the `protobuf/*.proto` files beside this module, the wire schema of Kubernetes 1.33
//! generated from the descriptors kubectl embeds (`protobuf/extract.py`). They are parsed once, by
//! a small parser of that generated subset of proto syntax; the wire format itself is decoded
//! here too. That keeps the feature free of new dependencies (no protobuf runtime, no build
//! script).
//!
//! The JSON is what Go's `encoding/json` makes of the decoded object:
//! - a scalar that is a plain Go value (`omitempty`) is left out when zero; one that is a Go
//!   pointer (`[(gogoproto.nullable) = true]` in the schema) is kept, since there `0`, `false`
//!   and `""` differ from absent (`replicas: 0`, `runAsUser: 0`);
//! - a message that is present becomes an object, even an empty one (`emptyDir: {}` matters);
//! - `[(berth.inline) = true]` fields (`json:",inline"`) merge into the enclosing object;
//! - `Time` and `MicroTime` become RFC 3339 strings (seconds, or 6 fractional digits), a zero
//!   (empty) one is left out; `Duration` a Go duration string, `Quantity` its string,
//!   `IntOrString` a number or a string, `RawExtension`/`FieldsV1` the JSON they embed, `bytes`
//!   base64, maps objects, and the list wrappers `Verbs`/`ExtraValue` arrays.

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine;
use serde_json::{Map, Number, Value};

use super::{limits, times::rfc3339};

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The prefix of every Kubernetes protobuf body.
const MAGIC: &[u8] = b"k8s\0";

/// Deeper nesting than any Kubernetes object has: a bound on recursion for hostile bodies.
const MAX_DEPTH: usize = 64;

/// The schema files, by package. Each is generated; see `protobuf/extract.py`.
const SCHEMA_FILES: &[(&str, &str)] = &[
    (
        "resource",
        include_str!("protobuf/k8s.io.apimachinery.pkg.api.resource.proto"),
    ),
    (
        "meta/v1",
        include_str!("protobuf/k8s.io.apimachinery.pkg.apis.meta.v1.proto"),
    ),
    (
        "runtime",
        include_str!("protobuf/k8s.io.apimachinery.pkg.runtime.proto"),
    ),
    (
        "runtime/schema",
        include_str!("protobuf/k8s.io.apimachinery.pkg.runtime.schema.proto"),
    ),
    (
        "intstr",
        include_str!("protobuf/k8s.io.apimachinery.pkg.util.intstr.proto"),
    ),
    ("core/v1", include_str!("protobuf/k8s.io.api.core.v1.proto")),
    ("apps/v1", include_str!("protobuf/k8s.io.api.apps.v1.proto")),
    (
        "authentication/v1",
        include_str!("protobuf/k8s.io.api.authentication.v1.proto"),
    ),
    (
        "authorization/v1",
        include_str!("protobuf/k8s.io.api.authorization.v1.proto"),
    ),
    (
        "autoscaling/v1",
        include_str!("protobuf/k8s.io.api.autoscaling.v1.proto"),
    ),
    ("batch/v1", include_str!("protobuf/k8s.io.api.batch.v1.proto")),
    (
        "certificates/v1",
        include_str!("protobuf/k8s.io.api.certificates.v1.proto"),
    ),
    (
        "coordination/v1",
        include_str!("protobuf/k8s.io.api.coordination.v1.proto"),
    ),
    (
        "discovery/v1",
        include_str!("protobuf/k8s.io.api.discovery.v1.proto"),
    ),
    ("events/v1", include_str!("protobuf/k8s.io.api.events.v1.proto")),
    (
        "networking/v1",
        include_str!("protobuf/k8s.io.api.networking.v1.proto"),
    ),
    ("policy/v1", include_str!("protobuf/k8s.io.api.policy.v1.proto")),
    ("rbac/v1", include_str!("protobuf/k8s.io.api.rbac.v1.proto")),
    (
        "scheduling/v1",
        include_str!("protobuf/k8s.io.api.scheduling.v1.proto"),
    ),
];

const META_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

/// Why a protobuf body could not be turned into JSON.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body does not start with `k8s\0`, so it is not a Kubernetes protobuf body at all.
    #[error("the body does not start with the Kubernetes protobuf magic bytes \"k8s\\x00\"")]
    MissingMagic,
    /// A varint, a length-delimited value or a fixed-size value runs past the end of its message.
    #[error("the protobuf data is truncated (in {context})")]
    Truncated {
        /// What was being read.
        context: String,
    },
    /// A varint longer than 10 bytes: no valid encoder writes one.
    #[error("the protobuf data has a varint longer than 10 bytes (in {context})")]
    VarintTooLong {
        /// What was being read.
        context: String,
    },
    /// A field key with field number 0 or a wire type protobuf does not have (or the deprecated
    /// groups, which Kubernetes never uses).
    #[error("the protobuf data has an invalid field key (field {field}, wire type {wire_type}) in {context}")]
    InvalidKey {
        /// The field number of the key.
        field: u64,
        /// The wire type of the key.
        wire_type: u8,
        /// The message being read.
        context: String,
    },
    /// A known field arrived with a wire type its schema type cannot have.
    #[error("field {field} has wire type {wire_type}, which does not fit its type")]
    WireTypeMismatch {
        /// `Message.field`.
        field: String,
        /// The wire type found.
        wire_type: u8,
    },
    /// A string field holds bytes that are not UTF-8.
    #[error("field {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// `Message.field`.
        field: String,
    },
    /// A `RawExtension` or `FieldsV1` holds bytes that are neither JSON nor a protobuf object.
    #[error("field {field} does not hold valid JSON: {source}")]
    InvalidEmbeddedJson {
        /// `Message.field`.
        field: String,
        /// What the JSON parser said.
        source: serde_json::Error,
    },
    /// The `runtime.Unknown` envelope has no `apiVersion` or no `kind`.
    #[error("the protobuf envelope does not name the object's apiVersion and kind")]
    MissingTypeMeta,
    /// The apiVersion/kind is not one this server has a protobuf schema for.
    #[error("no protobuf schema for kind {kind} in {api_version}: send it as application/json")]
    UnknownKind {
        /// The envelope's apiVersion.
        api_version: String,
        /// The envelope's kind.
        kind: String,
    },
    /// The envelope says the object is compressed (`contentEncoding`), which clients do not do.
    #[error("unsupported protobuf content encoding {0:?}")]
    UnsupportedEncoding(String),
    /// The envelope says `raw` is in a format other than protobuf or JSON.
    #[error("unsupported content type {0:?} inside the protobuf envelope")]
    UnsupportedContentType(String),
    /// Messages nested deeper than any Kubernetes object: refused rather than recursed into.
    #[error("the protobuf data nests messages deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The body decodes to more objects or values than any object has (see `api::limits`): refused
    /// while decoding, before it is built.
    #[error(
        "the protobuf body decodes to more than {} objects and arrays or {} values",
        limits::MAX_BODY_NODES,
        limits::MAX_BODY_VALUES
    )]
    TooLarge,
    /// The built-in schema failed to parse: a bug in this crate's schema files (tests catch it).
    #[error("the built-in protobuf schema is invalid: {0}")]
    Schema(String),
}

/// A length-delimited protobuf field (`number`, wire type 2) holding `payload`: the one encoding
/// hand-made bodies need (tests, the hostile-client benchmark); the server itself only decodes.
pub fn length_delimited(number: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    for mut v in [(number << 3) | 2, payload.len() as u64] {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    out.extend_from_slice(payload);
    out
}

/// Decodes a Kubernetes protobuf body (`k8s\0` + `runtime.Unknown`) into the object's JSON, with
/// `apiVersion` and `kind` from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    decode_at(body, 0, &Budget::default())
}

/// What a body has decoded to so far, shared by the objects nested in it: decoding stops when it is
/// over [`limits`]' budget, so a small body of empty messages cannot become a huge value.
#[derive(Default)]
struct Budget(std::cell::Cell<limits::Shape>);

impl Budget {
    fn spend(&self, nodes: usize, values: usize) -> Result<(), ProtobufError> {
        let mut shape = self.0.get();
        shape.nodes += nodes;
        shape.values += values;
        self.0.set(shape);
        if limits::over_budget(shape) {
            return Err(ProtobufError::TooLarge);
        }
        Ok(())
    }
}

/// [`decode`] of a body nested `depth` messages deep (a protobuf `RawExtension` holds a whole body).
fn decode_at(body: &[u8], depth: usize, budget: &Budget) -> Result<Value, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep);
    }
    let rest = body.strip_prefix(MAGIC).ok_or(ProtobufError::MissingMagic)?;
    let envelope = Envelope::parse(rest)?;
    if !envelope.content_encoding.is_empty() {
        return Err(ProtobufError::UnsupportedEncoding(envelope.content_encoding));
    }
    if envelope.api_version.is_empty() || envelope.kind.is_empty() {
        return Err(ProtobufError::MissingTypeMeta);
    }
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(envelope.api_version.clone()));
    object.insert("kind".into(), Value::String(envelope.kind.clone()));
    match envelope.content_type.as_str() {
        "" | MEDIA_TYPE => {
            let schema = schema()?;
            let message = schema.message_for(&envelope.api_version, &envelope.kind)?;
            Decoder { schema, budget }.message_into(message, envelope.raw, &mut object, depth + 1)?;
        }
        json if json.contains("json") => {
            let embedded = embedded_json(envelope.raw, "Unknown.raw", depth + 1, budget)?;
            if let Value::Object(fields) = embedded {
                object.extend(fields);
            }
        }
        other => return Err(ProtobufError::UnsupportedContentType(other.to_string())),
    }
    Ok(Value::Object(object))
}

/// The `runtime.Unknown` envelope. Read by hand: it is the one message whose content is not
/// described by the kind it names.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
    content_type: String,
}

impl<'a> Envelope<'a> {
    fn parse(buf: &'a [u8]) -> Result<Self, ProtobufError> {
        let mut envelope = Envelope {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
            content_type: String::new(),
        };
        let mut reader = Reader::new(buf, "Unknown");
        while let Some((number, wire)) = reader.key()? {
            match (number, wire) {
                (1, LEN) => {
                    let mut type_meta = Reader::new(reader.bytes()?, "TypeMeta");
                    while let Some((number, wire)) = type_meta.key()? {
                        match (number, wire) {
                            (1, LEN) => {
                                envelope.api_version = utf8(type_meta.bytes()?, "TypeMeta.apiVersion")?
                            }
                            (2, LEN) => envelope.kind = utf8(type_meta.bytes()?, "TypeMeta.kind")?,
                            _ => type_meta.skip(wire)?,
                        }
                    }
                }
                (2, LEN) => envelope.raw = reader.bytes()?,
                (3, LEN) => envelope.content_encoding = utf8(reader.bytes()?, "Unknown.contentEncoding")?,
                (4, LEN) => envelope.content_type = utf8(reader.bytes()?, "Unknown.contentType")?,
                _ => reader.skip(wire)?,
            }
        }
        Ok(envelope)
    }
}

// ----- wire format -----

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// A cursor over one message's bytes. `context` names the message for error messages.
struct Reader<'a, 'c> {
    buf: &'a [u8],
    pos: usize,
    context: &'c str,
}

impl<'a, 'c> Reader<'a, 'c> {
    fn new(buf: &'a [u8], context: &'c str) -> Self {
        Reader { buf, pos: 0, context }
    }

    fn truncated(&self) -> ProtobufError {
        ProtobufError::Truncated {
            context: self.context.to_string(),
        }
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos).ok_or_else(|| self.truncated())?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(ProtobufError::VarintTooLong {
            context: self.context.to_string(),
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| self.truncated())?;
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// A length-delimited value.
    fn bytes(&mut self) -> Result<&'a [u8], ProtobufError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| self.truncated())?;
        self.take(len)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], ProtobufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// The next field's number and wire type, or `None` at the end of the message.
    fn key(&mut self) -> Result<Option<(u64, u8)>, ProtobufError> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        if number == 0 || !matches!(wire, VARINT | FIXED64 | LEN | FIXED32) {
            return Err(ProtobufError::InvalidKey {
                field: number,
                wire_type: wire,
                context: self.context.to_string(),
            });
        }
        Ok(Some((number, wire)))
    }

    /// Skips a field this schema does not know (added in a later Kubernetes version).
    fn skip(&mut self, wire: u8) -> Result<(), ProtobufError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            _ => self.take(4).map(drop),
        }
    }
}

fn utf8(bytes: &[u8], field: &str) -> Result<String, ProtobufError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtobufError::InvalidUtf8 {
        field: field.to_string(),
    })
}

/// `RawExtension.raw` and `FieldsV1.Raw`: JSON as a rule, a nested protobuf object when the client
/// encoded it so.
fn embedded_json(bytes: &[u8], field: &str, depth: usize, budget: &Budget) -> Result<Value, ProtobufError> {
    if bytes.starts_with(MAGIC) {
        return decode_at(bytes, depth, budget);
    }
    // Counted before it is parsed, like any JSON body.
    limits::check_body(bytes).map_err(|_| ProtobufError::TooLarge)?;
    let value = serde_json::from_slice(bytes).map_err(|source| ProtobufError::InvalidEmbeddedJson {
        field: field.to_string(),
        source,
    })?;
    let shape = limits::shape_of(&value);
    budget.spend(shape.nodes, shape.values)?;
    Ok(value)
}

// ----- schema -----

/// A protobuf scalar type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Bool,
    String,
    Bytes,
    Double,
    Float,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
}

impl Scalar {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "int32" => Scalar::Int32,
            "int64" => Scalar::Int64,
            "uint32" => Scalar::Uint32,
            "uint64" => Scalar::Uint64,
            "sint32" => Scalar::Sint32,
            "sint64" => Scalar::Sint64,
            "bool" => Scalar::Bool,
            "string" => Scalar::String,
            "bytes" => Scalar::Bytes,
            "double" => Scalar::Double,
            "float" => Scalar::Float,
            "fixed32" => Scalar::Fixed32,
            "fixed64" => Scalar::Fixed64,
            "sfixed32" => Scalar::Sfixed32,
            "sfixed64" => Scalar::Sfixed64,
            _ => return None,
        })
    }

    /// The wire type a single value of this type has (repeated numbers may also come packed).
    fn wire_type(self) -> u8 {
        match self {
            Scalar::String | Scalar::Bytes => LEN,
            Scalar::Double | Scalar::Fixed64 | Scalar::Sfixed64 => FIXED64,
            Scalar::Float | Scalar::Fixed32 | Scalar::Sfixed32 => FIXED32,
            _ => VARINT,
        }
    }
}

/// A field's value type: a scalar, or a message by full name (no leading dot).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Type {
    Scalar(Scalar),
    Message(String),
}

/// How many values a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Optional,
    Repeated,
    /// `map<key, value>`: repeated entries with the key as field 1, the value as field 2.
    Map(Scalar),
}

#[derive(Debug, Clone)]
struct Field {
    /// `Message.field`, for errors.
    path: String,
    json_name: String,
    label: Label,
    ty: Type,
    /// A Go pointer: its zero value is sent on purpose and kept.
    nullable: bool,
    /// `json:",inline"`: the message's fields go into the enclosing object.
    inline: bool,
}

#[derive(Debug, Default)]
struct Message {
    name: String,
    fields: HashMap<u64, Field>,
}

#[derive(Debug, Default)]
struct Schema {
    messages: HashMap<String, Message>,
}

/// The parsed built-in schema, once per process.
fn schema() -> Result<&'static Schema, ProtobufError> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(Schema::builtin)
        .as_ref()
        .map_err(|e| ProtobufError::Schema(e.clone()))
}

impl Schema {
    fn builtin() -> Result<Schema, String> {
        let mut schema = Schema::default();
        for (name, text) in SCHEMA_FILES {
            schema.parse_file(text).map_err(|e| format!("{name}: {e}"))?;
        }
        schema.check_references()?;
        Ok(schema)
    }

    /// Parses one generated schema file: `package`, then `message Name { fields }` blocks with one
    /// field a line, and comments. Nothing else of proto syntax occurs in them.
    fn parse_file(&mut self, text: &str) -> Result<(), String> {
        let mut package = None;
        let mut current: Option<Message> = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.split("//").next().unwrap_or_default().trim();
            let at = |e: String| format!("line {}: {e}", n + 1);
            if line.is_empty() || line.starts_with("syntax ") {
                continue;
            } else if let Some(p) = line.strip_prefix("package ") {
                package = Some(p.trim_end_matches(';').trim().to_string());
            } else if let Some(name) = line.strip_prefix("message ").and_then(|l| l.strip_suffix('{')) {
                let package = package
                    .as_ref()
                    .ok_or_else(|| at("message before package".into()))?;
                current = Some(Message {
                    name: format!("{package}.{}", name.trim()),
                    fields: HashMap::new(),
                });
            } else if line == "}" {
                let message = current.take().ok_or_else(|| at("unbalanced }".into()))?;
                self.messages.insert(message.name.clone(), message);
            } else {
                let message = current
                    .as_mut()
                    .ok_or_else(|| at(format!("unexpected {line:?}")))?;
                let (number, field) = parse_field(&message.name, line).map_err(at)?;
                message.fields.insert(number, field);
            }
        }
        match current {
            Some(m) => Err(format!("message {} is not closed", m.name)),
            None => Ok(()),
        }
    }

    /// Every message a field names must exist, so decoding never meets a missing one.
    fn check_references(&self) -> Result<(), String> {
        for message in self.messages.values() {
            for field in message.fields.values() {
                if let Type::Message(name) = &field.ty
                    && !self.messages.contains_key(name)
                {
                    return Err(format!("{} refers to unknown message {name}", field.path));
                }
            }
        }
        Ok(())
    }

    /// The message of a kind: `v1` is core, `apps/v1` apps, `x.k8s.io/v1` package `x`; meta/v1's
    /// kinds (`Status`, `DeleteOptions`, ...) are served in every group.
    fn message_for(&self, api_version: &str, kind: &str) -> Result<&Message, ProtobufError> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let package = match group.split('.').next().unwrap_or_default() {
            "" => "core",
            first => first,
        };
        [
            format!("k8s.io.api.{package}.{version}.{kind}"),
            format!("{META_V1}.{kind}"),
        ]
        .iter()
        .find_map(|name| self.messages.get(name))
        .ok_or_else(|| ProtobufError::UnknownKind {
            api_version: api_version.into(),
            kind: kind.into(),
        })
    }
}

/// Parses `optional|repeated TYPE NAME = N [options];` or `map<K, V> NAME = N [options];`.
fn parse_field(message: &str, line: &str) -> Result<(u64, Field), String> {
    let line = line.strip_suffix(';').ok_or("field without ;")?;
    let (decl, options) = match line.split_once('[') {
        Some((decl, options)) => (decl, options.strip_suffix(']').ok_or("unclosed [")?),
        None => (line, ""),
    };
    let (decl, number) = decl.split_once('=').ok_or("field without =")?;
    let number: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("bad field number in {line:?}"))?;
    let (label, ty, name) = parse_declaration(decl.trim())?;
    let mut field = Field {
        path: format!("{message}.{name}"),
        json_name: name.to_string(),
        label,
        ty,
        nullable: false,
        inline: false,
    };
    for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match option.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("(gogoproto.nullable)", v)) => field.nullable = v == "true",
            Some(("(berth.inline)", v)) => field.inline = v == "true",
            Some(("json_name", v)) => field.json_name = v.trim_matches('"').to_string(),
            _ => return Err(format!("unknown option {option:?}")),
        }
    }
    Ok((number, field))
}

fn parse_declaration(decl: &str) -> Result<(Label, Type, &str), String> {
    if let Some(rest) = decl.strip_prefix("map<") {
        let (types, name) = rest.split_once('>').ok_or("unclosed map<")?;
        let (key, value) = types.split_once(',').ok_or("map without value type")?;
        let key = Scalar::parse(key.trim()).ok_or_else(|| format!("bad map key {key:?}"))?;
        return Ok((Label::Map(key), parse_type(value.trim()), name.trim()));
    }
    let mut words = decl.split_whitespace();
    let (Some(label), Some(ty), Some(name), None) = (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(format!("bad field {decl:?}"));
    };
    let label = match label {
        "optional" | "required" => Label::Optional,
        "repeated" => Label::Repeated,
        other => return Err(format!("bad label {other:?}")),
    };
    Ok((label, parse_type(ty), name))
}

fn parse_type(name: &str) -> Type {
    Scalar::parse(name).map_or_else(
        || Type::Message(name.trim_start_matches('.').to_string()),
        Type::Scalar,
    )
}

// ----- decoding -----

/// Messages whose JSON is not an object of their fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    Time,
    MicroTime,
    Duration,
    Quantity,
    IntOrString,
    /// `RawExtension` and `FieldsV1`: the JSON document in their one bytes field.
    EmbeddedJson,
    /// `Verbs`, `ExtraValue`: Go string slices, wrapped in a message only for protobuf.
    StringList,
}

fn special(message: &str) -> Option<Special> {
    Some(match message {
        "k8s.io.apimachinery.pkg.apis.meta.v1.Time" => Special::Time,
        "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime" => Special::MicroTime,
        "k8s.io.apimachinery.pkg.apis.meta.v1.Duration" => Special::Duration,
        "k8s.io.apimachinery.pkg.api.resource.Quantity" => Special::Quantity,
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => Special::IntOrString,
        "k8s.io.apimachinery.pkg.runtime.RawExtension" | "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            Special::EmbeddedJson
        }
        "k8s.io.apimachinery.pkg.apis.meta.v1.Verbs"
        | "k8s.io.api.authentication.v1.ExtraValue"
        | "k8s.io.api.authorization.v1.ExtraValue"
        | "k8s.io.api.certificates.v1.ExtraValue" => Special::StringList,
        _ => return None,
    })
}

/// One raw field value as it came off the wire.
enum Wire<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    Len(&'a [u8]),
}

impl<'a> Wire<'a> {
    fn read(reader: &mut Reader<'a, '_>, wire: u8) -> Result<Self, ProtobufError> {
        Ok(match wire {
            VARINT => Wire::Varint(reader.varint()?),
            FIXED64 => Wire::Fixed64(reader.fixed()?),
            LEN => Wire::Len(reader.bytes()?),
            _ => Wire::Fixed32(reader.fixed()?),
        })
    }
}

struct Decoder<'b> {
    schema: &'static Schema,
    budget: &'b Budget,
}

impl Decoder<'_> {
    /// Decodes `bytes` as `message`, adding its fields to `out` (which may already hold the fields
    /// of an enclosing message, for inline ones).
    fn message_into(
        &self,
        message: &Message,
        bytes: &[u8],
        out: &mut Map<String, Value>,
        depth: usize,
    ) -> Result<(), ProtobufError> {
        if depth > MAX_DEPTH {
            return Err(ProtobufError::TooDeep);
        }
        let mut reader = Reader::new(bytes, &message.name);
        while let Some((number, wire)) = reader.key()? {
            let Some(field) = message.fields.get(&number) else {
                reader.skip(wire)?;
                continue;
            };
            let value = Wire::read(&mut reader, wire)?;
            self.field_into(field, value, out, depth)?;
        }
        Ok(())
    }

    fn field_into(
        &self,
        field: &Field,
        value: Wire<'_>,
        out: &mut Map<String, Value>,
        depth: usize,
    ) -> Result<(), ProtobufError> {
        match field.label {
            Label::Map(key) => {
                let (k, v) = self.map_entry(field, key, &value, depth)?;
                let map = out
                    .entry(field.json_name.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(k, v);
                }
            }
            Label::Repeated => {
                let items = self.repeated(field, &value, depth)?;
                let list = out
                    .entry(field.json_name.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = list {
                    list.extend(items);
                }
            }
            Label::Optional => match (&field.ty, &value) {
                (Type::Message(name), Wire::Len(bytes)) if field.inline => {
                    let message = self.message(name)?;
                    self.message_into(message, bytes, out, depth + 1)?;
                }
                _ => match self.singular(field, &value, depth)? {
                    Some(v) => {
                        out.insert(field.json_name.clone(), v);
                    }
                    // A later occurrence wins in protobuf, also when it is the zero value.
                    None => {
                        out.remove(&field.json_name);
                    }
                },
            },
        }
        Ok(())
    }

    fn message(&self, name: &str) -> Result<&'static Message, ProtobufError> {
        self.schema
            .messages
            .get(name)
            .ok_or_else(|| ProtobufError::Schema(format!("no message {name}")))
    }

    /// A singular field's JSON, or `None` where Go's JSON leaves it out.
    fn singular(
        &self,
        field: &Field,
        value: &Wire<'_>,
        depth: usize,
    ) -> Result<Option<Value>, ProtobufError> {
        match &field.ty {
            Type::Scalar(s) => {
                let v = scalar(field, *s, value)?;
                Ok((field.nullable || !is_zero(&v)).then_some(v))
            }
            Type::Message(name) => self.message_value(field, name, value, depth),
        }
    }

    fn repeated(&self, field: &Field, value: &Wire<'_>, depth: usize) -> Result<Vec<Value>, ProtobufError> {
        match (&field.ty, value) {
            // Packed numbers: several values in one length-delimited field.
            (Type::Scalar(s), Wire::Len(bytes)) if s.wire_type() != LEN => {
                let mut reader = Reader::new(bytes, &field.path);
                let mut items = Vec::new();
                while reader.pos < bytes.len() {
                    self.budget.spend(0, 1)?;
                    let item = Wire::read(&mut reader, s.wire_type())?;
                    items.push(scalar(field, *s, &item)?);
                }
                Ok(items)
            }
            (Type::Scalar(s), _) => {
                self.budget.spend(0, 1)?;
                Ok(vec![scalar(field, *s, value)?])
            }
            (Type::Message(name), _) => Ok(vec![
                self.message_value(field, name, value, depth)?
                    .unwrap_or(Value::Null),
            ]),
        }
    }

    fn map_entry(
        &self,
        field: &Field,
        key: Scalar,
        value: &Wire<'_>,
        depth: usize,
    ) -> Result<(String, Value), ProtobufError> {
        self.budget.spend(0, 1)?;
        let bytes = len(field, value)?;
        let mut reader = Reader::new(bytes, &field.path);
        let (mut k, mut v) = (None, None);
        while let Some((number, wire)) = reader.key()? {
            let item = Wire::read(&mut reader, wire)?;
            match number {
                1 => k = Some(scalar(field, key, &item)?),
                2 => v = Some(self.map_value(field, &item, depth)?),
                _ => {}
            }
        }
        let k = match k {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let v = match v {
            Some(v) => v,
            None => self.map_value(field, &Wire::Len(&[]), depth)?,
        };
        Ok((k, v))
    }

    /// A map value is always kept, zero or not (Go keeps every map entry).
    fn map_value(&self, field: &Field, value: &Wire<'_>, depth: usize) -> Result<Value, ProtobufError> {
        match &field.ty {
            Type::Scalar(s) => match value {
                Wire::Len(b) if b.is_empty() && s.wire_type() != LEN => Ok(zero(*s)),
                _ => scalar(field, *s, value),
            },
            Type::Message(name) => Ok(self
                .message_value(field, name, value, depth)?
                .unwrap_or(Value::Null)),
        }
    }

    fn message_value(
        &self,
        field: &Field,
        name: &str,
        value: &Wire<'_>,
        depth: usize,
    ) -> Result<Option<Value>, ProtobufError> {
        let bytes = len(field, value)?;
        if let Some(kind) = special(name) {
            self.budget.spend(0, 1)?;
            return special_value(field, kind, bytes, depth + 1, self.budget);
        }
        self.budget.spend(1, 1)?;
        let mut object = Map::new();
        self.message_into(self.message(name)?, bytes, &mut object, depth + 1)?;
        Ok(Some(Value::Object(object)))
    }
}

fn len<'a>(field: &Field, value: &Wire<'a>) -> Result<&'a [u8], ProtobufError> {
    match value {
        Wire::Len(bytes) => Ok(bytes),
        other => Err(mismatch(field, other)),
    }
}

fn mismatch(field: &Field, value: &Wire<'_>) -> ProtobufError {
    let wire_type = match value {
        Wire::Varint(_) => VARINT,
        Wire::Fixed64(_) => FIXED64,
        Wire::Len(_) => LEN,
        Wire::Fixed32(_) => FIXED32,
    };
    ProtobufError::WireTypeMismatch {
        field: field.path.clone(),
        wire_type,
    }
}

/// A scalar's JSON: numbers as numbers (Go writes int64 as a number too), bytes as base64.
fn scalar(field: &Field, ty: Scalar, value: &Wire<'_>) -> Result<Value, ProtobufError> {
    Ok(match (ty, value) {
        (Scalar::String, Wire::Len(b)) => Value::String(utf8(b, &field.path)?),
        (Scalar::Bytes, Wire::Len(b)) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        (Scalar::Bool, Wire::Varint(v)) => Value::Bool(*v != 0),
        // Truncation to 32 bits is how protobuf defines int32/uint32 on the wire.
        (Scalar::Int32, Wire::Varint(v)) => Value::from(*v as u32 as i32),
        (Scalar::Uint32, Wire::Varint(v)) => Value::from(*v as u32),
        (Scalar::Int64, Wire::Varint(v)) => Value::from(*v as i64),
        (Scalar::Uint64, Wire::Varint(v)) => Value::from(*v),
        (Scalar::Sint32, Wire::Varint(v)) => Value::from(zigzag(*v) as i32),
        (Scalar::Sint64, Wire::Varint(v)) => Value::from(zigzag(*v)),
        (Scalar::Fixed64, Wire::Fixed64(b)) => Value::from(u64::from_le_bytes(*b)),
        (Scalar::Sfixed64, Wire::Fixed64(b)) => Value::from(i64::from_le_bytes(*b)),
        (Scalar::Double, Wire::Fixed64(b)) => float(f64::from_le_bytes(*b)),
        (Scalar::Fixed32, Wire::Fixed32(b)) => Value::from(u32::from_le_bytes(*b)),
        (Scalar::Sfixed32, Wire::Fixed32(b)) => Value::from(i32::from_le_bytes(*b)),
        (Scalar::Float, Wire::Fixed32(b)) => float(f64::from(f32::from_le_bytes(*b))),
        _ => return Err(mismatch(field, value)),
    })
}

fn zigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn float(v: f64) -> Value {
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

fn zero(ty: Scalar) -> Value {
    match ty {
        Scalar::String | Scalar::Bytes => Value::String(String::new()),
        Scalar::Bool => Value::Bool(false),
        _ => Value::from(0),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    }
}

/// The fields of a small, fixed message (the special ones), by number, as raw wire values.
fn small_fields<'a>(field: &Field, bytes: &'a [u8]) -> Result<HashMap<u64, Wire<'a>>, ProtobufError> {
    let mut reader = Reader::new(bytes, &field.path);
    let mut out = HashMap::new();
    while let Some((number, wire)) = reader.key()? {
        out.insert(number, Wire::read(&mut reader, wire)?);
    }
    Ok(out)
}

fn varint_of(fields: &HashMap<u64, Wire<'_>>, number: u64) -> u64 {
    match fields.get(&number) {
        Some(Wire::Varint(v)) => *v,
        _ => 0,
    }
}

fn bytes_of<'a>(fields: &HashMap<u64, Wire<'a>>, number: u64) -> &'a [u8] {
    match fields.get(&number) {
        Some(Wire::Len(b)) => b,
        _ => &[],
    }
}

/// The JSON of a special message, or `None` where Go writes `null` (zero times, empty raw JSON).
fn special_value(
    field: &Field,
    kind: Special,
    bytes: &[u8],
    depth: usize,
    budget: &Budget,
) -> Result<Option<Value>, ProtobufError> {
    let fields = small_fields(field, bytes)?;
    let text = |number| utf8(bytes_of(&fields, number), &field.path);
    Ok(match kind {
        // A zero Time is marshalled as an empty message (and is `null` in JSON).
        Special::Time | Special::MicroTime if bytes.is_empty() => None,
        Special::Time => Some(Value::String(rfc3339(varint_of(&fields, 1) as i64, None))),
        Special::MicroTime => {
            let micros = (varint_of(&fields, 2) as u32 as i32).rem_euclid(1_000_000_000) / 1000;
            Some(Value::String(rfc3339(varint_of(&fields, 1) as i64, Some(micros))))
        }
        Special::Duration => Some(Value::String(go_duration(varint_of(&fields, 1) as i64))),
        Special::Quantity => {
            let s = text(1)?;
            Some(Value::String(if s.is_empty() { "0".into() } else { s }))
        }
        Special::IntOrString if varint_of(&fields, 1) == 1 => Some(Value::String(text(3)?)),
        Special::IntOrString => Some(Value::from(varint_of(&fields, 2) as u32 as i32)),
        Special::EmbeddedJson => {
            let raw = bytes_of(&fields, 1);
            if raw.is_empty() {
                None
            } else {
                Some(embedded_json(raw, &field.path, depth, budget)?)
            }
        }
        Special::StringList => {
            let mut reader = Reader::new(bytes, &field.path);
            let mut items = Vec::new();
            while let Some((number, wire)) = reader.key()? {
                match (number, Wire::read(&mut reader, wire)?) {
                    (1, Wire::Len(b)) => {
                        budget.spend(0, 1)?;
                        items.push(Value::String(utf8(b, &field.path)?));
                    }
                    (1, other) => return Err(mismatch(field, &other)),
                    _ => {}
                }
            }
            Some(Value::Array(items))
        }
    })
}

/// A nanosecond count as Go's `time.Duration.String` writes it: `1h2m3.5s`, `1.5ms`, `0s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", decimal(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", decimal(n, 1_000_000));
    }
    let secs = n / 1_000_000_000;
    let (hours, minutes) = (secs / 3600, secs / 60 % 60);
    let seconds = decimal(n % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

/// `n / unit` with the fraction's trailing zeros dropped, as Go prints durations.
fn decimal(n: u64, unit: u64) -> String {
    let (whole, frac) = (n / unit, n % unit);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = unit.ilog10() as usize;
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests;
