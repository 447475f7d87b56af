//! net_pcap with `infinite_rx=1` copies its whole rx pcap into mbufs when the queue is set up:
//! the pool must hold that many more. This counts the frames of those files.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// Frames a `net_pcap` device with `infinite_rx=1` will preload from its `rx_pcap` files
/// (0 for any other device).
pub fn preloaded_frames(devargs: &str) -> u64 {
    let mut parts = devargs.split(',');
    let dev = parts.next().unwrap_or("");
    if !dev.starts_with("net_pcap") {
        return 0;
    }
    let kv: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
    if !kv
        .iter()
        .any(|&(k, v)| k.trim() == "infinite_rx" && v.trim() == "1")
    {
        return 0;
    }
    kv.iter()
        .filter(|(k, _)| k.trim() == "rx_pcap")
        .map(|(_, f)| count_records(Path::new(f.trim())).unwrap_or(0))
        .sum()
}

/// Number of records in a classic pcap file.
pub fn count_records(path: &Path) -> std::io::Result<u64> {
    let mut r = BufReader::new(File::open(path)?);
    let mut global = [0u8; 24];
    r.read_exact(&mut global)?;
    let magic = u32::from_le_bytes([global[0], global[1], global[2], global[3]]);
    let little = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a pcap file",
            ))
        }
    };
    let mut n = 0;
    let mut rec = [0u8; 16];
    while r.read_exact(&mut rec).is_ok() {
        let b = [rec[8], rec[9], rec[10], rec[11]];
        let incl = if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        };
        r.seek_relative(i64::from(incl))?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_preloaded_frames_only_for_infinite_pcap() {
        let dir = std::env::temp_dir().join(format!("pmdswitch-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("in.pcap");
        pmdswitch_tests::write_pcap(&f, &[vec![1u8; 60], vec![2u8; 64], vec![3u8; 1514]]);
        assert_eq!(count_records(&f).unwrap(), 3);
        let p = f.display();
        assert_eq!(
            preloaded_frames(&format!("net_pcap0,rx_pcap={p},infinite_rx=1")),
            3
        );
        assert_eq!(preloaded_frames(&format!("net_pcap0,rx_pcap={p}")), 0);
        assert_eq!(
            preloaded_frames(&format!("net_tap0,rx_pcap={p},infinite_rx=1")),
            0
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
