//! The four scenarios: the baseline's fixed body, and Ward's read by id, search by family
//! name and create.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::Full;
use serde_json::Value;

use crate::client::{Reply, request};
use crate::load::{Rng, Workload};

/// The demo patients the store holds: ids and family names.
pub struct DemoPatients {
    pub ids: Vec<String>,
    /// Distinct family names, in first-seen order.
    pub families: Vec<String>,
    /// One demo patient without `id` and `meta`, as the template for creates.
    pub template: Value,
}

impl DemoPatients {
    /// The patients of `ward_fhir::synthetic::generate(seed, patients)`, which is what
    /// `ward demo` (and this benchmark) loads.
    pub fn generate(seed: u64, patients: usize) -> anyhow::Result<DemoPatients> {
        let mut ids = Vec::with_capacity(patients);
        let mut families: Vec<String> = Vec::new();
        let mut template = None;
        for r in ward_fhir::synthetic::generate(seed, patients) {
            if r["resourceType"] != "Patient" {
                continue;
            }
            if let Some(id) = r["id"].as_str() {
                ids.push(id.to_owned());
            }
            if let Some(f) = r["name"][0]["family"].as_str()
                && !families.iter().any(|x| x == f)
            {
                families.push(f.to_owned());
            }
            if template.is_none() {
                let mut t = r.clone();
                if let Some(o) = t.as_object_mut() {
                    o.remove("id");
                    o.remove("meta");
                }
                template = Some(t);
            }
        }
        anyhow::ensure!(!ids.is_empty(), "the synthetic data set has no patients");
        Ok(DemoPatients {
            ids,
            families,
            template: template.unwrap_or_default(),
        })
    }
}

fn json(reply: &Reply) -> Result<Value, String> {
    serde_json::from_slice(&reply.body).map_err(|e| format!("body is not JSON: {e}"))
}

fn expect_status(reply: &Reply, want: StatusCode) -> Result<(), String> {
    if reply.status == want {
        Ok(())
    } else {
        Err(format!("expected HTTP {want}, got {}", reply.status))
    }
}

/// `GET /` on the baseline: a fixed body of a known size.
pub struct Fixed {
    pub len: usize,
}

impl Workload for Fixed {
    fn request(&self, _rng: &mut Rng) -> (Request<Full<Bytes>>, usize) {
        (request(Method::GET, "/", None, None), 0)
    }

    fn check(&self, _tag: usize, reply: &Reply) -> Result<(), String> {
        expect_status(reply, StatusCode::OK)?;
        if reply.body.len() != self.len {
            return Err(format!(
                "baseline body of {} bytes, expected {}",
                reply.body.len(),
                self.len
            ));
        }
        Ok(())
    }
}

/// `GET /fhir/Patient/{id}` with ids drawn uniformly from the loaded patients.
pub struct Read {
    pub ids: Vec<String>,
    paths: Vec<String>,
    bearer: HeaderValue,
}

impl Read {
    pub fn new(ids: &[String], bearer: HeaderValue) -> Read {
        Read {
            paths: ids.iter().map(|id| format!("/fhir/Patient/{id}")).collect(),
            ids: ids.to_vec(),
            bearer,
        }
    }
}

impl Workload for Read {
    fn request(&self, rng: &mut Rng) -> (Request<Full<Bytes>>, usize) {
        let i = rng.below(self.paths.len());
        (request(Method::GET, &self.paths[i], Some(&self.bearer), None), i)
    }

    fn check(&self, tag: usize, reply: &Reply) -> Result<(), String> {
        expect_status(reply, StatusCode::OK)?;
        let v = json(reply)?;
        if v["resourceType"] != "Patient" {
            return Err(format!("read returned resourceType {}", v["resourceType"]));
        }
        if v["id"].as_str() != Some(self.ids[tag].as_str()) {
            return Err(format!(
                "read of Patient/{} returned id {}",
                self.ids[tag], v["id"]
            ));
        }
        Ok(())
    }
}

/// `GET /fhir/Patient?family=NAME` with names drawn from the loaded patients' family names
/// (so every search has matches); the server's default page size.
pub struct Search {
    families: Vec<String>,
    paths: Vec<String>,
    bearer: HeaderValue,
}

impl Search {
    pub fn new(families: &[String], bearer: HeaderValue) -> Search {
        Search {
            paths: families
                .iter()
                .map(|f| {
                    let enc: String = form_urlencoded::byte_serialize(f.as_bytes()).collect();
                    format!("/fhir/Patient?family={enc}")
                })
                .collect(),
            families: families.to_vec(),
            bearer,
        }
    }

    /// The request for family number `i` (the availability probe uses the first).
    pub fn request_for(&self, i: usize) -> Request<Full<Bytes>> {
        request(Method::GET, &self.paths[i], Some(&self.bearer), None)
    }
}

impl Workload for Search {
    fn request(&self, rng: &mut Rng) -> (Request<Full<Bytes>>, usize) {
        let i = rng.below(self.paths.len());
        (self.request_for(i), i)
    }

    fn check(&self, tag: usize, reply: &Reply) -> Result<(), String> {
        expect_status(reply, StatusCode::OK)?;
        let v = json(reply)?;
        let family = self.families[tag].to_lowercase();
        if v["resourceType"] != "Bundle" || v["type"] != "searchset" {
            return Err(format!(
                "search returned {} of type {}, expected a searchset Bundle",
                v["resourceType"], v["type"]
            ));
        }
        let entries = v["entry"].as_array().map(Vec::as_slice).unwrap_or_default();
        let matches: Vec<&Value> = entries
            .iter()
            .filter(|e| e["search"]["mode"].as_str().unwrap_or("match") == "match")
            .map(|e| &e["resource"])
            .collect();
        if matches.is_empty() {
            return Err(format!(
                "search for family {:?} found nothing",
                self.families[tag]
            ));
        }
        for r in matches {
            if r["resourceType"] != "Patient" {
                return Err(format!("search matched a {}", r["resourceType"]));
            }
            let names = r["name"].as_array().map(Vec::as_slice).unwrap_or_default();
            let hit = names.iter().any(|n| {
                n["family"]
                    .as_str()
                    .is_some_and(|f| f.to_lowercase().starts_with(&family))
            });
            if !hit {
                return Err(format!(
                    "search for family {:?} matched Patient/{} without that family name",
                    self.families[tag],
                    r["id"].as_str().unwrap_or("?")
                ));
            }
        }
        Ok(())
    }
}

/// `POST /fhir/Patient`: a demo-like patient, family name varied.
pub struct Create {
    bodies: Vec<Bytes>,
    families: Vec<String>,
    bearer: HeaderValue,
}

impl Create {
    pub fn new(patients: &DemoPatients, bearer: HeaderValue) -> anyhow::Result<Create> {
        let mut bodies = Vec::new();
        for f in &patients.families {
            let mut p = patients.template.clone();
            p["name"][0]["family"] = Value::from(f.as_str());
            bodies.push(Bytes::from(serde_json::to_vec(&p)?));
        }
        anyhow::ensure!(!bodies.is_empty(), "no family names to create patients with");
        Ok(Create {
            bodies,
            families: patients.families.clone(),
            bearer,
        })
    }
}

impl Workload for Create {
    fn request(&self, rng: &mut Rng) -> (Request<Full<Bytes>>, usize) {
        let i = rng.below(self.bodies.len());
        let req = request(
            Method::POST,
            "/fhir/Patient",
            Some(&self.bearer),
            Some(self.bodies[i].clone()),
        );
        (req, i)
    }

    fn check(&self, tag: usize, reply: &Reply) -> Result<(), String> {
        expect_status(reply, StatusCode::CREATED)?;
        let location = reply
            .headers
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or("create answered without a Location header")?;
        if !location.contains("Patient/") {
            return Err(format!("create answered Location {location:?}"));
        }
        if !reply.body.is_empty() {
            let v = json(reply)?;
            if v["resourceType"] != "Patient" || v["name"][0]["family"] != self.families[tag].as_str() {
                return Err("create returned a different resource than it was sent".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use serde_json::json;

    fn reply(status: u16, body: &Value) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(serde_json::to_vec(body).unwrap()),
        }
    }

    fn bearer() -> HeaderValue {
        HeaderValue::from_static("Bearer x")
    }

    #[test]
    fn demo_patients_match_the_generator() {
        let d = DemoPatients::generate(42, 30).unwrap();
        assert_eq!(d.ids.len(), 30);
        assert!(!d.families.is_empty());
        assert!(d.template.get("id").is_none());
        assert_eq!(d.template["resourceType"], "Patient");
    }

    #[test]
    fn read_checks_type_and_id() {
        let r = Read::new(&["a".into(), "b".into()], bearer());
        assert!(
            r.check(1, &reply(200, &json!({"resourceType": "Patient", "id": "b"})))
                .is_ok()
        );
        assert!(
            r.check(0, &reply(200, &json!({"resourceType": "Patient", "id": "b"})))
                .is_err()
        );
        assert!(
            r.check(1, &reply(200, &json!({"resourceType": "Observation", "id": "b"})))
                .is_err()
        );
        assert!(
            r.check(1, &reply(201, &json!({"resourceType": "Patient", "id": "b"})))
                .is_err()
        );
        let mut rng = Rng::new(3);
        let (req, tag) = r.request(&mut rng);
        assert_eq!(req.uri().path(), format!("/fhir/Patient/{}", r.ids[tag]));
        assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer x");
    }

    #[test]
    fn search_checks_the_bundle() {
        let s = Search::new(&["García".into()], bearer());
        let (req, _) = s.request(&mut Rng::new(1));
        assert_eq!(req.uri().query(), Some("family=Garc%C3%ADa"));
        let hit = |family: &str| {
            json!({"resourceType": "Bundle", "type": "searchset", "entry": [
                {"resource": {"resourceType": "Patient", "id": "p", "name": [{"family": family}]},
                 "search": {"mode": "match"}},
                {"resource": {"resourceType": "Organization", "id": "o"}, "search": {"mode": "include"}}
            ]})
        };
        assert!(s.check(0, &reply(200, &hit("García"))).is_ok());
        assert!(s.check(0, &reply(200, &hit("Smith"))).is_err());
        let empty = json!({"resourceType": "Bundle", "type": "searchset"});
        assert!(s.check(0, &reply(200, &empty)).is_err());
        assert!(
            s.check(0, &reply(200, &json!({"resourceType": "Patient"})))
                .is_err()
        );
    }

    #[test]
    fn create_wants_201_and_location() {
        let d = DemoPatients::generate(42, 5).unwrap();
        let c = Create::new(&d, bearer()).unwrap();
        let (req, tag) = c.request(&mut Rng::new(9));
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.headers()[header::CONTENT_TYPE], "application/fhir+json");
        let body = json!({"resourceType": "Patient", "id": "n", "name": [{"family": d.families[tag]}]});
        let mut ok = reply(201, &body);
        assert!(c.check(tag, &ok).is_err(), "no Location");
        ok.headers.insert(
            header::LOCATION,
            HeaderValue::from_static("https://h/fhir/Patient/n/_history/1"),
        );
        assert!(c.check(tag, &ok).is_ok());
        ok.status = StatusCode::OK;
        assert!(c.check(tag, &ok).is_err());
    }
}
