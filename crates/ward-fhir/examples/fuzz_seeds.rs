//! Writes the deterministic synthetic resources into a directory, one JSON file each: seeds
//! for the `fhir_json` fuzz target (`scripts/fuzz` runs this).

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| std::io::Error::other("usage: fuzz_seeds DIR"))?;
    std::fs::create_dir_all(&dir)?;
    for (i, resource) in ward_fhir::synthetic::generate(7, 5).iter().enumerate() {
        let path = std::path::Path::new(&dir).join(format!("synthetic-{i:04}.json"));
        std::fs::write(path, serde_json::to_vec(resource).map_err(std::io::Error::other)?)?;
    }
    Ok(())
}
