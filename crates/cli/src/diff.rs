//! Two texts compared line by line: side by side, and as a diff that marks removed and added
//! lines.

/// Beyond this many line pairs, the diff does not search for the longest common subsequence
/// (quadratic) and shows the differing middle as removed then added.
const MAX_CELLS: usize = 4_000_000;

/// The lines of `left` and `right` in two columns separated by ` | `, the left one padded to
/// its widest line.
pub fn side_by_side(left: &str, right: &str) -> String {
    let l: Vec<&str> = left.lines().collect();
    let r: Vec<&str> = right.lines().collect();
    let width = l.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for i in 0..l.len().max(r.len()) {
        let a = l.get(i).copied().unwrap_or("");
        let b = r.get(i).copied().unwrap_or("");
        let pad = width - a.chars().count();
        let line = format!("{a}{} | {b}", " ".repeat(pad));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A line of a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    Same(&'a str),
    Removed(&'a str),
    Added(&'a str),
}

/// The lines of `a` and `b` as kept, removed (only in `a`) and added (only in `b`), in order:
/// a longest common subsequence of lines is kept.
pub fn diff<'a>(a: &'a str, b: &'a str) -> Vec<Line<'a>> {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..].iter().rev().zip(b[prefix..].iter().rev()).take_while(|(x, y)| x == y).count();
    let (ma, mb) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut out: Vec<Line<'a>> = a[..prefix].iter().map(|l| Line::Same(l)).collect();
    if ma.len().saturating_mul(mb.len()) <= MAX_CELLS {
        out.extend(lcs_diff(ma, mb));
    } else {
        out.extend(ma.iter().map(|l| Line::Removed(l)));
        out.extend(mb.iter().map(|l| Line::Added(l)));
    }
    out.extend(a[a.len() - suffix..].iter().map(|l| Line::Same(l)));
    out
}

fn lcs_diff<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<Line<'a>> {
    // lengths[i][j]: the longest common subsequence of a[i..] and b[j..].
    let cols = b.len() + 1;
    let mut lengths = vec![0u32; (a.len() + 1) * cols];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lengths[i * cols + j] = if a[i] == b[j] {
                lengths[(i + 1) * cols + j + 1] + 1
            } else {
                lengths[(i + 1) * cols + j].max(lengths[i * cols + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len() + b.len());
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(Line::Same(a[i]));
            i += 1;
            j += 1;
        } else if lengths[(i + 1) * cols + j] >= lengths[i * cols + j + 1] {
            out.push(Line::Removed(a[i]));
            i += 1;
        } else {
            out.push(Line::Added(b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| Line::Removed(l)));
    out.extend(b[j..].iter().map(|l| Line::Added(l)));
    out
}

/// The diff as text: `  ` before kept lines, `- ` before removed ones, `+ ` before added ones.
pub fn render(lines: &[Line<'_>]) -> String {
    let mut out = String::new();
    for line in lines {
        let (mark, text) = match line {
            Line::Same(t) => (' ', t),
            Line::Removed(t) => ('-', t),
            Line::Added(t) => ('+', t),
        };
        out.push(mark);
        out.push(' ');
        out.push_str(text);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_removed_and_added_lines_and_keeps_the_rest() {
        let a = "ssh:\n  password_auth: false\n  port: 22\ntelnet: denied\n";
        let b = "ssh:\n  password_auth: true\n  port: 22\ntelnet: denied\nftp: denied\n";
        assert_eq!(
            render(&diff(a, b)),
            "  ssh:\n-   password_auth: false\n+   password_auth: true\n    port: 22\n  telnet: denied\n+ ftp: denied\n"
        );
        assert_eq!(render(&diff("x\n", "x\n")), "  x\n");
        assert_eq!(render(&diff("", "a\n")), "+ a\n");
    }

    #[test]
    fn keeps_a_longest_common_subsequence() {
        let lines = diff("a\nb\nc\nd\n", "b\nx\nd\n");
        assert_eq!(
            lines,
            vec![Line::Removed("a"), Line::Same("b"), Line::Removed("c"), Line::Added("x"), Line::Same("d")]
        );
    }

    #[test]
    fn puts_two_texts_side_by_side() {
        assert_eq!(side_by_side("ab\nc\n", "x\ny\nz\n"), "ab | x\nc  | y\n   | z\n");
    }
}
