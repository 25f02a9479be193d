//! Prints the `KafkaProxyPolicy` CRD as YAML (`cargo run -p kproxy-api --bin crdgen > crds/kafkaproxypolicies.yaml`).

fn main() -> std::process::ExitCode {
    match kproxy_api::crd::crd_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
