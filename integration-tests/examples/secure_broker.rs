//! The security tests' broker (SASL/SCRAM behind TLS) on its own, for
//! trying a command against it by hand:
//!
//! ```text
//! cargo run -p integration-tests --example secure_broker
//! ```
//!
//! prints a `[librdkafka]` section and the bootstrap address, and keeps the
//! broker up until interrupted.

fn main() {
    let secure = integration_tests::secure::secure_broker();
    println!("bootstrap_servers = {:?}", secure.bootstrap);
    println!("[librdkafka]");
    for (k, v) in secure.client_settings(integration_tests::secure::PASSWORD, &secure.ca) {
        println!("{k:?} = {v:?}");
    }
    println!(
        "# a CA that did not sign the broker's certificate: {}",
        secure.rogue_ca.display()
    );
    loop {
        std::thread::park();
    }
}
