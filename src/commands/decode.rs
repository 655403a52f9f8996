//! `relais decode`: placeholder until the decode module's CLI lands.

#[derive(clap::Args)]
pub struct DecodeArgs {}

pub fn run(_args: DecodeArgs) -> anyhow::Result<u8> {
    anyhow::bail!("decode is not wired yet")
}
