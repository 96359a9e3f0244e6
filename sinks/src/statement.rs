//! Which SQL texts only read: the gate in front of `tidewater query` (and of any other reader
//! of the warehouse), so that a query can neither change the warehouse nor reach beyond it
//! (`ATTACH`, `COPY ... TO`, `INSTALL`, `SET`, ...).
//!
//! The text is tokenized as DuckDB's (PostgreSQL's) scanner does: comments (`--`, nested
//! `/* */`), string literals (`'...'`, `E'...'` with backslash escapes, `$tag$...$tag$`) and
//! quoted identifiers are skipped, so a keyword or `;` inside them counts for nothing. Then
//! there must be exactly one statement, it must begin with a reading keyword, and every
//! statement nested in it (a common table expression, what `EXPLAIN` explains, a parenthesized
//! query) must read too. Anything unrecognised is refused: this is an allow-list.
//!
//! Readers also open the warehouse read-only and with external access disabled, so a text that
//! slipped through could still not write.

/// Statements that read (DuckDB's `FROM t` and `TABLE t` are queries; `SHOW`, `DESCRIBE`,
/// `SUMMARIZE` describe tables or queries).
const READS: &[&str] = &[
    "SELECT",
    "VALUES",
    "FROM",
    "TABLE",
    "SHOW",
    "DESCRIBE",
    "SUMMARIZE",
    "PIVOT",
    "UNPIVOT",
    "PIVOT_WIDER",
    "PIVOT_LONGER",
];

/// Checks that `sql` is exactly one statement that only reads; the error says why not.
pub fn check_read_only(sql: &str) -> Result<(), String> {
    let tokens = tokenize(sql)?;
    let mut statements = tokens
        .split(|t| *t == Token::Symbol(';'))
        .filter(|s| !s.is_empty());
    let Some(statement) = statements.next() else {
        return Err("there is no statement".to_owned());
    };
    if statements.next().is_some() {
        return Err("several statements; send one at a time".to_owned());
    }
    balanced(statement)?;
    no_writing_subquery(statement)?;
    reads(statement)
}

/// Parentheses that match, so that the nested statements found are the ones DuckDB sees.
fn balanced(tokens: &[Token]) -> Result<(), String> {
    let mut depth = 0usize;
    for token in tokens {
        match token {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => {
                depth = depth.checked_sub(1).ok_or("unbalanced parentheses")?;
            }
            _ => {}
        }
    }
    match depth {
        0 => Ok(()),
        _ => Err("unbalanced parentheses".to_owned()),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// A keyword, identifier or number, in upper case.
    Word(String),
    /// A string literal or a quoted identifier (never a keyword).
    Quoted,
    Symbol(char),
}

fn refusal(what: &str) -> String {
    format!(
        "{what}: only read-only statements run here ({}, EXPLAIN or WITH ... SELECT)",
        READS.join(", ")
    )
}

/// Whether one statement (no `;`) reads.
fn reads(tokens: &[Token]) -> Result<(), String> {
    match tokens.first() {
        None => Err("there is no statement".to_owned()),
        Some(Token::Symbol('(')) => {
            let close = matching(tokens, 0)?;
            reads(&tokens[1..close])
        }
        Some(Token::Word(word)) if READS.contains(&word.as_str()) => Ok(()),
        Some(Token::Word(word)) if word == "WITH" => with(&tokens[1..]),
        Some(Token::Word(word)) if word == "EXPLAIN" => explain(&tokens[1..]),
        Some(Token::Word(word)) => Err(refusal(&format!("this is a {word} statement"))),
        Some(_) => Err(refusal("this is not a statement")),
    }
}

/// `WITH [RECURSIVE] name ... AS [NOT] [MATERIALIZED] (query) [, ...] statement`: every
/// query and the statement must read.
fn with(mut tokens: &[Token]) -> Result<(), String> {
    if tokens.first() == Some(&word("RECURSIVE")) {
        tokens = &tokens[1..];
    }
    loop {
        let mut i = 0;
        // The name, its column list, DuckDB's `USING KEY (...)`: up to AS.
        while tokens.get(i) != Some(&word("AS")) {
            match tokens.get(i) {
                None => return Err(refusal("a WITH clause without `AS (query)`")),
                Some(Token::Symbol('(')) => i = matching(tokens, i)? + 1,
                Some(_) => i += 1,
            }
        }
        i += 1;
        while matches!(tokens.get(i), Some(t) if *t == word("NOT") || *t == word("MATERIALIZED")) {
            i += 1;
        }
        if tokens.get(i) != Some(&Token::Symbol('(')) {
            return Err(refusal("a WITH clause without `AS (query)`"));
        }
        let close = matching(tokens, i)?;
        reads(&tokens[i + 1..close])?;
        tokens = &tokens[close + 1..];
        match tokens.first() {
            Some(Token::Symbol(',')) => tokens = &tokens[1..],
            _ => return reads(tokens),
        }
    }
}

/// `EXPLAIN [ANALYZE] [(options)] statement`: ANALYZE runs the statement, so it must read.
fn explain(mut tokens: &[Token]) -> Result<(), String> {
    while matches!(tokens.first(), Some(Token::Word(w)) if ["ANALYZE", "ANALYSE", "VERBOSE"].contains(&w.as_str()))
    {
        tokens = &tokens[1..];
    }
    let starts_statement = |t: Option<&Token>| match t {
        Some(Token::Word(w)) => READS.contains(&w.as_str()) || w == "WITH" || w == "EXPLAIN",
        Some(Token::Symbol('(')) => true,
        _ => false,
    };
    // `(FORMAT JSON)` is an option list, `(SELECT 1)` a statement.
    if tokens.first() == Some(&Token::Symbol('(')) && !starts_statement(tokens.get(1)) {
        let close = matching(tokens, 0)?;
        tokens = &tokens[close + 1..];
    }
    reads(tokens)
}

/// Refuses a parenthesized statement that writes anywhere in the text (data-modifying common
/// table expressions or subqueries); these word pairs never start an expression.
fn no_writing_subquery(tokens: &[Token]) -> Result<(), String> {
    for (i, token) in tokens.iter().enumerate() {
        if *token != Token::Symbol('(') {
            continue;
        }
        let (Some(Token::Word(first)), next) = (tokens.get(i + 1), tokens.get(i + 2)) else {
            continue;
        };
        let writes = match first.as_str() {
            "INSERT" | "MERGE" => next == Some(&word("INTO")),
            "DELETE" => next == Some(&word("FROM")),
            "UPDATE" => matches!(next, Some(Token::Word(_) | Token::Quoted)),
            _ => false,
        };
        if writes {
            return Err(refusal(&format!("a nested {first} statement")));
        }
    }
    Ok(())
}

fn word(text: &str) -> Token {
    Token::Word(text.to_owned())
}

/// The index of the `)` that closes the `(` at `open`.
fn matching(tokens: &[Token], open: usize) -> Result<usize, String> {
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate().skip(open) {
        match token {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
    }
    Err("unbalanced parentheses".to_owned())
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80
}

/// Splits `sql` into tokens, skipping whitespace, comments and the contents of literals.
fn tokenize(sql: &str) -> Result<Vec<Token>, String> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let next = bytes.get(i + 1).copied();
        match byte {
            _ if byte.is_ascii_whitespace() => i += 1,
            b'-' if next == Some(b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(bytes.len(), |n| i + n + 1);
            }
            b'/' if next == Some(b'*') => i = skip_block_comment(bytes, i)?,
            b'\'' => {
                i = skip_quoted(bytes, i, b'\'', false).ok_or("an unterminated string literal")?;
                tokens.push(Token::Quoted);
            }
            b'"' => {
                i = skip_quoted(bytes, i, b'"', false)
                    .ok_or("an unterminated quoted identifier")?;
                tokens.push(Token::Quoted);
            }
            b'$' if dollar_tag(bytes, i).is_some() => {
                i = skip_dollar_quoted(bytes, i).ok_or("an unterminated $-quoted string")?;
                tokens.push(Token::Quoted);
            }
            _ if is_word_byte(byte) && byte != b'$' => {
                let start = i;
                while i < bytes.len() && is_word_byte(bytes[i]) {
                    i += 1;
                }
                let text = &sql[start..i];
                // E'...' is a string with backslash escapes: `\'` does not end it.
                if text.eq_ignore_ascii_case("E") && bytes.get(i) == Some(&b'\'') {
                    i = skip_quoted(bytes, i, b'\'', true)
                        .ok_or("an unterminated string literal")?;
                    tokens.push(Token::Quoted);
                } else {
                    tokens.push(Token::Word(text.to_ascii_uppercase()));
                }
            }
            _ => {
                let symbol = sql[i..].chars().next().unwrap_or('?');
                tokens.push(Token::Symbol(symbol));
                i += symbol.len_utf8();
            }
        }
    }
    Ok(tokens)
}

/// `/* ... */`, nested as PostgreSQL and DuckDB nest them; returns the index after it.
fn skip_block_comment(bytes: &[u8], start: usize) -> Result<usize, String> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => i += 1,
        }
    }
    Err("an unterminated /* comment".to_owned())
}

/// A literal from its opening `quote`; a doubled quote is one quote character, and with
/// `backslash` a backslash escapes the next byte. Returns the index after it.
fn skip_quoted(bytes: &[u8], start: usize, quote: u8, backslash: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslash => i += 2,
            b if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The `$tag$` (tag empty, or a name not starting with a digit) that opens a dollar-quoted
/// string at `start`; `None` for a parameter (`$1`, `$name`) or a lone `$`.
fn dollar_tag(bytes: &[u8], start: usize) -> Option<&[u8]> {
    let name = bytes[start + 1..]
        .iter()
        .take_while(|b| is_word_byte(**b) && **b != b'$')
        .count();
    let end = start + 1 + name;
    let starts_well = name == 0 || !bytes[start + 1].is_ascii_digit();
    (starts_well && bytes.get(end) == Some(&b'$')).then(|| &bytes[start..=end])
}

/// `$tag$ ... $tag$`; returns the index after it, `None` if it does not end.
fn skip_dollar_quoted(bytes: &[u8], start: usize) -> Option<usize> {
    let tag = dollar_tag(bytes, start)?;
    let body = start + tag.len();
    bytes[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map(|n| body + n + tag.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(sql: &str) {
        if let Err(e) = check_read_only(sql) {
            panic!("{sql:?} was refused: {e}");
        }
    }

    fn refused(sql: &str, reason: &str) {
        match check_read_only(sql) {
            Ok(()) => panic!("{sql:?} was allowed"),
            Err(e) => assert!(e.contains(reason), "{sql:?}: {e}"),
        }
    }

    #[test]
    fn reading_statements_are_allowed() {
        for sql in [
            "SELECT 1",
            "select * from station_hourly order by entries desc limit 10",
            "  \n\tSELECT 1  ",
            "SELECT 1;",
            "SELECT 1 ; -- done\n",
            "WITH t AS (SELECT 1 AS x) SELECT * FROM t",
            "with recursive t(n) as (select 1 union all select n + 1 from t where n < 3) select * from t",
            "WITH a AS MATERIALIZED (SELECT 1), b AS NOT MATERIALIZED (SELECT 2) SELECT * FROM a, b",
            "WITH t AS (VALUES (1)) FROM t",
            "VALUES (1, 'a'), (2, 'b')",
            "FROM station_hourly",
            "TABLE station_hourly",
            "SHOW TABLES",
            "SHOW ALL TABLES",
            "DESCRIBE station_hourly",
            "DESCRIBE SELECT 1",
            "SUMMARIZE station_hourly",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT 1",
            "EXPLAIN (FORMAT JSON) SELECT 1",
            "EXPLAIN (SELECT 1)",
            "PIVOT station_hourly ON station USING sum(entries)",
            "(SELECT 1) UNION (SELECT 2)",
            "((SELECT 1))",
            "SELECT 1 AS \"delete\", 'DROP TABLE x; DELETE FROM y' AS s",
            "SELECT update FROM (SELECT 1 AS update)",
            "SELECT (update + 1) FROM t",
            "SELECT $$ ; DELETE FROM t $$, $tag$ it's $ ; $tag$",
            "SELECT E'it\\'s ; DELETE FROM t'",
            "SELECT 'it''s ; DELETE'",
            "SELECT $1, ?, $name",
            "SELECT a$b FROM t",
            "SELECT 'ü' AS é",
        ] {
            allowed(sql);
        }
    }

    #[test]
    fn leading_comments_are_skipped() {
        allowed("-- the busiest stations\nSELECT 1");
        allowed("/* a comment */ SELECT 1");
        allowed("/* nested /* comments */ still a comment */ SELECT 1");
        allowed("--\n--\n  /**/ -- x\n select 1");
        refused("-- SELECT 1\nDELETE FROM t", "DELETE");
        refused("/* SELECT */ DROP TABLE t", "DROP");
        // DuckDB nests comments: the DELETE is outside them, the SELECT inside.
        refused("/* /* */ SELECT 1 */ DELETE FROM t", "DELETE");
    }

    #[test]
    fn writing_and_configuring_statements_are_refused() {
        for (sql, keyword) in [
            ("INSERT INTO t VALUES (1)", "INSERT"),
            ("update t set a = 1", "UPDATE"),
            ("DELETE FROM station_hourly", "DELETE"),
            ("CREATE TABLE t (a INT)", "CREATE"),
            ("CREATE OR REPLACE VIEW v AS SELECT 1", "CREATE"),
            ("DROP TABLE station_hourly", "DROP"),
            ("ALTER TABLE t ADD COLUMN b INT", "ALTER"),
            ("ATTACH 'other.duckdb' AS o", "ATTACH"),
            ("DETACH w", "DETACH"),
            ("COPY t TO 'out.csv'", "COPY"),
            ("COPY (SELECT 1) TO 'out.csv'", "COPY"),
            ("INSTALL httpfs", "INSTALL"),
            ("LOAD httpfs", "LOAD"),
            ("SET threads = 1", "SET"),
            ("RESET threads", "RESET"),
            ("PRAGMA enable_profiling", "PRAGMA"),
            ("CALL pragma_version()", "CALL"),
            ("CHECKPOINT", "CHECKPOINT"),
            ("FORCE CHECKPOINT", "FORCE"),
            ("EXPORT DATABASE 'dir'", "EXPORT"),
            ("IMPORT DATABASE 'dir'", "IMPORT"),
            ("BEGIN TRANSACTION", "BEGIN"),
            ("VACUUM", "VACUUM"),
            ("USE other", "USE"),
            ("TRUNCATE t", "TRUNCATE"),
            (
                "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE",
                "MERGE",
            ),
            ("PREPARE p AS DELETE FROM t", "PREPARE"),
            ("EXECUTE p", "EXECUTE"),
            ("EXPLAIN ANALYZE DELETE FROM t", "DELETE"),
            ("EXPLAIN (FORMAT JSON) DELETE FROM t", "DELETE"),
            ("WITH t AS (SELECT 1) DELETE FROM s", "DELETE"),
            (
                "WITH t AS (SELECT 1) INSERT INTO s SELECT * FROM t",
                "INSERT",
            ),
            (
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                "DELETE",
            ),
            ("SELECT * FROM (DELETE FROM t RETURNING *)", "nested DELETE"),
            (
                "SELECT * FROM (INSERT INTO t VALUES (1) RETURNING *)",
                "nested INSERT",
            ),
            (
                "SELECT * FROM (UPDATE t SET a = 1 RETURNING *)",
                "nested UPDATE",
            ),
            ("(DELETE FROM t)", "nested DELETE"),
            ("'SELECT 1'", "not a statement"),
        ] {
            refused(sql, keyword);
        }
    }

    #[test]
    fn only_one_statement_is_allowed() {
        refused("SELECT 1; SELECT 2", "several statements");
        refused("SELECT 1; DELETE FROM t", "several statements");
        refused("SELECT 1;;DROP TABLE t;", "several statements");
        refused("", "no statement");
        refused("  ;  -- nothing\n", "no statement");
        refused("/* only a comment */", "no statement");
    }

    #[test]
    fn unterminated_literals_and_comments_are_refused() {
        refused("SELECT 'abc", "unterminated string");
        refused("SELECT \"abc", "unterminated quoted identifier");
        refused("SELECT 1 /* abc", "unterminated /* comment");
        refused("SELECT 1 /* /* */", "unterminated /* comment");
        refused("SELECT $x$ abc", "unterminated $-quoted");
        refused("SELECT E'abc\\'", "unterminated string");
        refused("SELECT (1", "unbalanced");
        refused("SELECT 1) FROM (t", "unbalanced");
        refused("WITH t AS (SELECT 1 SELECT 2", "unbalanced");
        refused("WITH t SELECT 1", "WITH clause");
    }
}
