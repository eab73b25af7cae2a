//! Bounds on what one request can make the server hold.
//!
//! A request body is small (at most [`crate::server::MAX_BODY`]), but what the server builds from it
//! need not be: a 3 MB merge patch of a million empty `containerStatuses` became a 67 MB object
//! (every element defaulted) and drove the server to 2.4 GiB resident. So the shape of a body is
//! counted before anything is built from it ([`check_body`], a pass that allocates nothing), and
//! what is stored is bounded in bytes ([`check_stored`]) as etcd bounds it. Between the two, the
//! work is proportional to the counted shape.

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::status::ApiError;

/// The largest object the store keeps, encoded: etcd's default request limit (1.5 MiB), which
/// kube-apiserver's objects live under too.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// The most objects and arrays one body may hold. Real objects hold far fewer (an EndpointSlice of
/// 1,000 endpoints about 4,000); each one becomes a typed, defaulted structure of up to a few
/// kilobytes, so this bound is what keeps one request's memory in the tens of megabytes.
pub const MAX_BODY_NODES: usize = 10_000;

/// The most values (scalars included) one body may hold: a ConfigMap of 100,000 small keys fits.
pub const MAX_BODY_VALUES: usize = 250_000;

/// Marks the counting pass's own refusal among serde errors.
const TOO_MANY: &str = "berth: body over its shape budget";

/// What a JSON document is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Objects and arrays.
    pub nodes: usize,
    /// Every value, objects and arrays included.
    pub values: usize,
}

impl Shape {
    fn add(&mut self, other: Shape) {
        self.nodes += other.nodes;
        self.values += other.values;
    }

    fn over(&self) -> bool {
        self.nodes > MAX_BODY_NODES || self.values > MAX_BODY_VALUES
    }
}

/// Counts a document while it is read, allocating nothing, and stops as soon as it is over budget.
struct Counted(Shape);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl CountVisitor {
    fn scalar<E>(self) -> Result<Counted, E> {
        Ok(Counted(Shape { nodes: 0, values: 1 }))
    }
}

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Counted;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Counted, E> {
        self.scalar()
    }
    fn visit_i64<E>(self, _: i64) -> Result<Counted, E> {
        self.scalar()
    }
    fn visit_u64<E>(self, _: u64) -> Result<Counted, E> {
        self.scalar()
    }
    fn visit_f64<E>(self, _: f64) -> Result<Counted, E> {
        self.scalar()
    }
    fn visit_str<E>(self, _: &str) -> Result<Counted, E> {
        self.scalar()
    }
    fn visit_unit<E>(self) -> Result<Counted, E> {
        self.scalar()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Counted, A::Error> {
        let mut shape = Shape { nodes: 1, values: 1 };
        while let Some(Counted(item)) = seq.next_element()? {
            shape.add(item);
            if shape.over() {
                return Err(de::Error::custom(TOO_MANY));
            }
        }
        Ok(Counted(shape))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Counted, A::Error> {
        let mut shape = Shape { nodes: 1, values: 1 };
        while let Some(IgnoredAny) = map.next_key()? {
            let Counted(value) = map.next_value()?;
            shape.add(value);
            if shape.over() {
                return Err(de::Error::custom(TOO_MANY));
            }
        }
        Ok(Counted(shape))
    }
}

/// Refuses (413) a JSON body with more objects, arrays or values than any object has. A body that
/// is not JSON passes: whoever parses it says what is wrong with it.
pub fn check_body(body: &[u8]) -> Result<(), ApiError> {
    if body.is_empty() {
        return Ok(());
    }
    match serde_json::from_slice::<Counted>(body) {
        Err(e) if e.to_string().starts_with(TOO_MANY) => Err(too_complex()),
        _ => Ok(()),
    }
}

/// [`check_body`] for a YAML body, whose aliases are expanded as they are counted (a "billion
/// laughs" document of nested aliases is refused without being built).
pub fn check_yaml(body: &[u8]) -> Result<(), ApiError> {
    match serde_norway::from_slice::<Counted>(body) {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().starts_with(TOO_MANY) => Err(too_complex()),
        // The YAML parser's own bounds (recursion, alias repetition) or a syntax error.
        Err(e) => Err(ApiError::bad_request(format!(
            "the YAML body does not parse: {e}"
        ))),
    }
}

/// The shape of a value already built (protobuf bodies count while they decode; see there).
pub fn shape_of(v: &Value) -> Shape {
    let mut shape = Shape { nodes: 0, values: 1 };
    match v {
        Value::Array(items) => {
            shape.nodes += 1;
            items.iter().for_each(|i| shape.add(shape_of(i)));
        }
        Value::Object(map) => {
            shape.nodes += 1;
            map.values().for_each(|i| shape.add(shape_of(i)));
        }
        _ => {}
    }
    shape
}

/// Whether a decoded body of this shape is over the budget (for decoders that count as they go).
pub fn over_budget(shape: Shape) -> bool {
    shape.over()
}

fn too_complex() -> ApiError {
    ApiError::new(
        413,
        "RequestEntityTooLarge",
        format!(
            "Request entity too large: the body holds more than {MAX_BODY_NODES} objects and arrays or {MAX_BODY_VALUES} values"
        ),
    )
}

/// Refuses (413) an object whose stored form would be over [`MAX_OBJECT_BYTES`], before it is
/// written.
pub fn check_stored(encoded: &[u8]) -> Result<(), ApiError> {
    if encoded.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!(
                "Request entity too large: the object would be {} bytes, and at most {MAX_OBJECT_BYTES} are stored",
                encoded.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(json: &str) -> Shape {
        serde_json::from_str::<Counted>(json)
            .map(|c| c.0)
            .expect("counts")
    }

    #[test]
    fn counts_nodes_and_values_without_building_them() {
        assert_eq!(shape("1"), Shape { nodes: 0, values: 1 });
        assert_eq!(shape(r#"{"a":[1,2,{}],"b":"x"}"#), Shape { nodes: 3, values: 6 });
        let v: Value = serde_json::from_str(r#"{"a":[1,2,{}],"b":"x"}"#).expect("json");
        assert_eq!(shape_of(&v), Shape { nodes: 3, values: 6 });
    }

    #[test]
    fn amplifying_bodies_are_413_and_ordinary_ones_pass() {
        let many_objects = format!("[{}]", vec!["{}"; MAX_BODY_NODES + 1].join(","));
        assert_eq!(check_body(many_objects.as_bytes()).map_err(|e| e.code), Err(413));
        let many_values = format!("[{}]", vec!["1"; MAX_BODY_VALUES + 1].join(","));
        assert_eq!(check_body(many_values.as_bytes()).map_err(|e| e.code), Err(413));
        let keys: Vec<String> = (0..100_000).map(|i| format!("\"k{i}\":\"v\"")).collect();
        let configmap = format!(r#"{{"data":{{{}}}}}"#, keys.join(","));
        assert!(check_body(configmap.as_bytes()).is_ok());
        assert!(check_body(b"not json").is_ok(), "left to the parser to explain");
        // Nine levels of ten aliases each: a billion strings once expanded, a few hundred bytes
        // written down.
        let mut laughs = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (prev, next) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            let refs = vec![format!("*{prev}"); 10].join(",");
            laughs.push_str(&format!("{next}: &{next} [{refs}]\n"));
        }
        let started = std::time::Instant::now();
        let refused = check_yaml(laughs.as_bytes()).map_err(|e| e.code);
        assert!(matches!(refused, Err(400 | 413)), "{refused:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(check_yaml(b"metadata: {name: x}\ndata: {a: b}\n").is_ok());
        assert_eq!(
            check_stored(&vec![b' '; MAX_OBJECT_BYTES + 1]).map_err(|e| e.code),
            Err(413)
        );
        assert!(check_stored(&vec![b' '; MAX_OBJECT_BYTES]).is_ok());
    }
}
