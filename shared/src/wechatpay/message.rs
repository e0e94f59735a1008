//! The byte strings WeChat Pay signs, shared by both directions: what the merchant signs
//! (`sign`) and what WeChat Pay signed (`verify`). Kept below both so neither imports the
//! other's internals for them.

/// The authorization scheme (and `Wechatpay-Signature-Type`) of RSA merchants.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// Every line, each followed by `\n`: the shape of every signed message.
pub(crate) fn join_lines(lines: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_line_ends_with_a_newline() {
        assert_eq!(super::join_lines(&[b"a", b"", b"c"]), b"a\n\nc\n");
        assert!(super::join_lines(&[]).is_empty());
    }
}
