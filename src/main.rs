fn main() {
    std::process::exit(alipanfs::cli::main());
}
