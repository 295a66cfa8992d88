//! Prints every CRD Weft installs as one YAML stream; `make crds` writes it
//! to `crds/crds.gen.yaml`.

fn main() -> Result<(), serde_yaml::Error> {
    print!("{}", weft_crds::crd::all_yaml()?);
    Ok(())
}
