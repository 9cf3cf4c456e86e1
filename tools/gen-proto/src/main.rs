fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut cfg = prost_build::Config::new();
    cfg.out_dir(&args[2]);
    let include = std::path::Path::new(&args[1]).parent().expect("proto path has a parent");
    cfg.compile_protos(&[&args[1]], &[include]).expect("protoc failed");
}
