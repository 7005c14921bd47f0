//! Text as the prompt rules see it: one spelling for the many ways a word
//! can be typed.
//!
//! Rules are written once, in plain lower-case letters; users write
//! `ＮＡＫＥＤ`, `nàkéd`, `nаkеd` (Cyrillic а and е), `n4k3d`, `n a k e d`,
//! `na.ked` or `na\u{200B}ked`. Each of those becomes `naked` here, and
//! every character of the result remembers where in the original it came
//! from, so a rewrite can replace the original text of a match.
//!
//! The steps, per character: Unicode NFKC (full-width and mathematical
//! letters, ligatures), removal of invisible characters (zero-width spaces
//! and joiners, soft hyphens, other format characters), lower case,
//! accents stripped (canonical decomposition, combining marks dropped), and
//! look-alike letters of other scripts mapped to the Latin letter they pass
//! for ([`look_alike`]). Then the text is cut into tokens of letters and
//! digits; in a token that holds a letter, digits and `@`/`$` read as the
//! letters they stand for (`0`→o, `1`→i, `3`→e, `4`→a, `5`→s, `7`→t,
//! `@`→a, `$`→s), so `1024` stays a number and `ch1ld` is `child`.
//!
//! A *literal* view skips that last reading, so `12yo` stays an age.
//! Spacing is undone in two ways, each a [`View`] of its own:
//! - the *split* view breaks at every space and punctuation mark;
//! - the *joined* view keeps punctuation inside a word (`ch.ild`, `chi-ld`,
//!   `chi_ld`) out of it, breaking only at white space.
//!
//! In both, a run of three or more one-character tokens (`c h i l d`) is
//! read as one token; and such runs, put together, are a third, *spelled*
//! view in which words are looked for anywhere, not only as whole tokens
//! (`n a k e d c h i l d` holds both words).

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// One way of reading a text: its normalised form, and for each byte of it
/// the byte range of the original it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub text: String,
    /// `spans[i]` is the original range behind byte `i` of `text`.
    spans: Vec<(usize, usize)>,
    /// Words match anywhere in this view, not only as whole tokens.
    pub loose: bool,
}

impl View {
    /// The original byte range behind `text[start..end]`.
    pub fn original(&self, start: usize, end: usize) -> (usize, usize) {
        if start >= end || end > self.spans.len() {
            return (0, 0);
        }
        (self.spans[start].0, self.spans[end - 1].1)
    }
}

/// The views of a text that rules are matched against.
pub fn views(original: &str) -> Vec<View> {
    let chars = mapped_chars(original);
    let split = tokens(&chars, false, true);
    let joined = tokens(&chars, true, true);
    let literal = tokens(&chars, false, false);
    let spelled = spelled_runs(&split);
    let mut out = vec![
        render(&split, false),
        render(&joined, false),
        render(&literal, false),
    ];
    if !spelled.is_empty() {
        out.push(render(&spelled, true));
    }
    out
}

/// The text in its split view: what rules' words are written as, and what
/// a test can compare against.
pub fn normalise(text: &str) -> String {
    render(&tokens(&mapped_chars(text), false, true), false).text
}

/// A character after the per-character steps, with its original range.
#[derive(Clone, Copy, Debug)]
enum Mapped {
    /// A letter or a digit (or `@`/`$`, which may stand for one).
    Char(char, usize, usize),
    /// A separator; `true` for white space.
    Break(bool),
}

fn mapped_chars(original: &str) -> Vec<Mapped> {
    let mut out = Vec::with_capacity(original.len());
    for (start, c) in original.char_indices() {
        let end = start + c.len_utf8();
        for k in std::iter::once(c).nfkc() {
            if is_invisible(k) {
                continue;
            }
            for l in k.to_lowercase() {
                for d in std::iter::once(l).nfd() {
                    if is_combining_mark(d) {
                        continue;
                    }
                    let d = look_alike(d);
                    if d.is_alphanumeric() || d == '@' || d == '$' {
                        out.push(Mapped::Char(d, start, end));
                    } else {
                        out.push(Mapped::Break(d.is_whitespace()));
                    }
                }
            }
        }
    }
    out
}

/// Characters that show nothing: zero-width spaces and joiners, the word
/// joiner, the byte-order mark, soft hyphens, and other format characters.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// Lower-case letters of other scripts that pass for Latin ones (Cyrillic,
/// Greek, and a few Latin letters of other shapes), mapped to the Latin
/// letter. A small table of the look-alikes seen in evasions, after the
/// Unicode confusables list (UTS #39); NFKC has already folded the
/// mathematical and full-width forms.
fn look_alike(c: char) -> char {
    match c {
        // Cyrillic.
        'а' | 'ӓ' | 'ә' => 'a',
        'в' | 'ь' | 'ъ' => 'b',
        'с' | 'ҫ' => 'c',
        'ԁ' => 'd',
        'е' | 'ё' | 'є' | 'э' => 'e',
        'һ' | 'н' => 'h',
        'і' | 'ї' | 'ӏ' => 'i',
        'ј' => 'j',
        'к' | 'қ' => 'k',
        'м' => 'm',
        'п' | 'л' => 'n',
        'о' | 'ө' => 'o',
        'р' => 'p',
        'ԛ' => 'q',
        'г' => 'r',
        'ѕ' => 's',
        'т' => 't',
        'и' | 'ц' => 'u',
        'ѵ' => 'v',
        'ԝ' | 'ш' | 'щ' => 'w',
        'х' | 'ж' => 'x',
        'у' | 'ү' | 'ӯ' => 'y',
        'з' => 'z',
        // Greek.
        'α' | 'ά' => 'a',
        'β' => 'b',
        'ε' | 'έ' => 'e',
        'η' | 'ή' => 'n',
        'ι' | 'ί' | 'ϊ' => 'i',
        'κ' => 'k',
        'ν' => 'v',
        'ο' | 'ό' | 'σ' => 'o',
        'ρ' => 'p',
        'τ' => 't',
        'υ' | 'ύ' | 'μ' => 'u',
        'χ' => 'x',
        'γ' => 'y',
        'ζ' => 'z',
        'ω' | 'ώ' => 'w',
        // Latin letters of other shapes.
        'ı' => 'i',
        'ɑ' => 'a',
        'ɡ' => 'g',
        'ß' => 's',
        'ø' => 'o',
        'ł' => 'l',
        'đ' => 'd',
        other => other,
    }
}

/// Digits and signs read as letters inside a word.
fn leet(c: char) -> char {
    match c {
        '0' => 'o',
        '1' => 'i',
        '3' => 'e',
        '4' => 'a',
        '5' => 's',
        '7' => 't',
        '@' => 'a',
        '$' => 's',
        other => other,
    }
}

/// A token: its characters with their original ranges.
type Token = Vec<(char, usize, usize)>;

/// Cuts into tokens; `joined` lets punctuation inside a word join its
/// parts, `leet` reads digits in words as letters.
fn tokens(chars: &[Mapped], joined: bool, leet: bool) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::new();
    let mut current: Token = Vec::new();
    let mut pending_break = false;
    for m in chars {
        match *m {
            Mapped::Char(c, s, e) => {
                if pending_break && !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                pending_break = false;
                current.push((c, s, e));
            }
            Mapped::Break(space) => {
                if space || !joined {
                    pending_break = true;
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    let out = merge_single_runs(out);
    out.into_iter()
        .filter_map(|t| finish_token(t, leet))
        .collect()
}

/// Reads `@`, `$` and digits as letters in a token that holds a letter;
/// drops tokens left with nothing to match (a lone `$`).
fn finish_token(token: Token, leet_on: bool) -> Option<Token> {
    let wordy = leet_on && token.iter().any(|(c, _, _)| c.is_alphabetic());
    let token: Token = token
        .into_iter()
        .filter_map(|(c, s, e)| {
            let c = if wordy { leet(c) } else { c };
            (c.is_alphanumeric()).then_some((c, s, e))
        })
        .collect();
    (!token.is_empty()).then_some(token)
}

/// Runs of three or more one-character tokens become one token.
fn merge_single_runs(tokens: Vec<Token>) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::new();
    let mut run: Vec<Token> = Vec::new();
    let flush = |run: &mut Vec<Token>, out: &mut Vec<Token>| {
        if run.len() >= 3 {
            out.push(run.drain(..).flatten().collect());
        } else {
            out.append(run);
        }
    };
    for t in tokens {
        if t.len() == 1 {
            run.push(t);
        } else {
            flush(&mut run, &mut out);
            out.push(t);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// The tokens that came from spelled-out runs (`c h i l d`), for the loose view.
fn spelled_runs(split_tokens: &[Token]) -> Vec<Token> {
    // A merged run is a token whose characters come from separate
    // original places; a plain word's characters are contiguous.
    split_tokens
        .iter()
        .filter(|t| t.len() >= 3 && t.windows(2).any(|w| w[0].2 < w[1].1))
        .cloned()
        .collect()
}

fn render(tokens: &[Token], loose: bool) -> View {
    let mut text = String::new();
    let mut spans = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 {
            let prev = tokens[i - 1].last().map_or(0, |t| t.2);
            let next = token.first().map_or(prev, |t| t.1);
            text.push(' ');
            spans.push((prev, next.max(prev)));
        }
        for &(c, s, e) in token {
            text.push(c);
            spans.extend(std::iter::repeat_n((s, e), c.len_utf8()));
        }
    }
    View { text, spans, loose }
}
