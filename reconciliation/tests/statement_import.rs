//! Statement import end to end: every accepted file and value format, every refusal with its
//! row and column, the simulator's own format, and (ignored by default) a million-line file.
#![allow(clippy::unwrap_used)]

use std::io::{self, Read};

use chrono::{TimeZone, Utc};
use cva_ledger::money::Currency;
use cva_reconciliation::mapping::{ColumnMapping, Columns, DecimalSeparator};
use cva_reconciliation::statement::{StatementReader, MAX_ROW_ERRORS};
use cva_reconciliation::{
    content_sha256, parse_all, parse_reader, ParsedStatement, RowError, StatementError,
    StatementStatus,
};

fn xof() -> Currency {
    Currency::parse("XOF").unwrap()
}

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

fn generic(text: &str) -> ParsedStatement {
    match parse_all(text.as_bytes(), &ColumnMapping::generic(), xof()) {
        Ok(parsed) => parsed,
        Err(e) => panic!("{e}\n{:#?}", e.to_row_errors()),
    }
}

/// The row errors of a rejected statement.
fn rejected(bytes: &[u8], mapping: &ColumnMapping, currency: Currency) -> Vec<RowError> {
    match parse_all(bytes, mapping, currency) {
        Err(StatementError::Rejected { errors, more }) => {
            assert_eq!(more, 0);
            errors
        }
        other => panic!("expected row errors, got {other:?}"),
    }
}

fn where_(errors: &[RowError]) -> Vec<(usize, &str)> {
    errors.iter().map(|e| (e.row, e.column.as_str())).collect()
}

/// A statement as the simulator writes it (`RunningSim::statement_csv`): float 1,000,000 XOF,
/// fee 25; C-2's reference has a comma and is quoted; C-4 was reversed, so its payment row
/// says `reversed` and a `-REV` row gives the money back.
const SIMULATOR_SAMPLE: &str = "\
transaction_id,reference,msisdn,amount,currency,fee,status,completed_at,balance_after
SIMTX00000001,C-1,+22370121111,65000,XOF,25,completed,2024-03-01T10:22:33.123456789+00:00,934975
SIMTX00000002,\"C-2, second\",+22370122222,65000,XOF,25,completed,2024-03-01T10:22:33.2+00:00,869950
SIMTX00000004,C-4,+22370120006,30000,XOF,25,reversed,2024-03-01T10:22:34+00:00,839925
SIMTX00000004-REV,C-4,+22370120006,-30000,XOF,0,reversal,2024-03-01T10:22:40+00:00,869925
";

#[test]
fn simulator_statement_parses() {
    let bytes = SIMULATOR_SAMPLE.as_bytes();
    let parsed = parse_all(bytes, &ColumnMapping::simulator(), xof()).unwrap();
    assert_eq!(parsed.lines.len(), 4);
    let rows: Vec<usize> = parsed.lines.iter().map(|l| l.row).collect();
    assert_eq!(rows, [2, 3, 4, 5]);

    let first = &parsed.lines[0];
    assert_eq!(first.transaction_id, "SIMTX00000001");
    assert_eq!(first.reference.as_deref(), Some("C-1"));
    assert_eq!(first.msisdn.as_deref(), Some("+22370121111"));
    assert_eq!((first.amount_minor, first.fee_minor), (65_000, 25));
    assert_eq!(first.currency, xof());
    assert_eq!(first.status, StatementStatus::Completed);
    assert_eq!(first.at.timestamp_subsec_nanos(), 123_456_789);
    assert_eq!(first.balance_after_minor, Some(934_975));

    assert_eq!(parsed.lines[1].reference.as_deref(), Some("C-2, second"));
    assert_eq!(parsed.lines[2].status, StatementStatus::Reversed);
    let reversal = &parsed.lines[3];
    assert_eq!(reversal.transaction_id, "SIMTX00000004-REV");
    assert_eq!(reversal.status, StatementStatus::Reversal);
    assert_eq!((reversal.amount_minor, reversal.fee_minor), (-30_000, 0));
    assert_eq!(
        reversal.at,
        Utc.with_ymd_and_hms(2024, 3, 1, 10, 22, 40).unwrap()
    );

    // Every balance_after follows from the one before: the chain float reconciliation checks.
    let mut balance = parsed.opening_balance.unwrap().minor();
    assert_eq!(balance, 1_000_000);
    for line in &parsed.lines {
        balance -= line.amount_minor + line.fee_minor;
        assert_eq!(Some(balance), line.balance_after_minor);
    }
    assert_eq!(parsed.closing_balance.unwrap().minor(), 869_925);
    assert_eq!(parsed.sha256, content_sha256(bytes));
}

#[test]
fn simulator_mapping_refuses_sub_unit_xof_amounts() {
    // The simulator accepts up to four decimal places; XOF has none, and nothing is rounded.
    let text = SIMULATOR_SAMPLE.replace(
        ",65000,XOF,25,completed,2024-03-01T10:22:33.2",
        ",1234.5,XOF,25,completed,2024-03-01T10:22:33.2",
    );
    let errors = rejected(text.as_bytes(), &ColumnMapping::simulator(), xof());
    assert_eq!(where_(&errors), [(3, "amount")]);
    assert_eq!(errors[0].reason, "more decimals than the currency has (0)");
}

#[test]
fn byte_order_mark_is_dropped_but_hashed() {
    let plain = "transaction_id,amount,date\nT1,100,2024-03-01\n";
    let with_bom = format!("\u{feff}{plain}");
    let a = generic(plain);
    let b = generic(&with_bom);
    assert_eq!(a.lines, b.lines);
    assert_ne!(a.sha256, b.sha256, "the hash is of the raw bytes");
    assert_eq!(b.sha256, content_sha256(with_bom.as_bytes()));
    assert_eq!(a.sha256, content_sha256(plain.as_bytes()));
}

#[test]
fn semicolon_files_with_comma_decimals() {
    let text = "transaction_id;amount;fee;currency;date;balance_after\n\
                T1;65 000,00;500;xof;01/03/2024;934.500\n\
                T2;12,50;0,25;USD;02/03/2024;\n";
    let parsed = generic(text);
    assert_eq!(parsed.lines[0].amount_minor, 65_000);
    assert_eq!(parsed.lines[0].fee_minor, 500);
    assert_eq!(parsed.lines[0].currency, xof());
    assert_eq!(parsed.lines[0].balance_after_minor, Some(934_500));
    assert_eq!(parsed.lines[1].currency, usd());
    assert_eq!(
        (parsed.lines[1].amount_minor, parsed.lines[1].fee_minor),
        (1250, 25)
    );
    assert_eq!(parsed.lines[1].balance_after_minor, None);
    // Two currencies: no single float balance.
    assert_eq!(parsed.opening_balance, None);
    assert_eq!(parsed.closing_balance, None);

    let reader = StatementReader::new(text.as_bytes(), &ColumnMapping::generic(), xof()).unwrap();
    assert_eq!(reader.delimiter(), ';');
}

#[test]
fn quoted_fields_hold_delimiters_quotes_and_line_breaks() {
    let text = "transaction_id,reference,amount,date\n\
                \"T,1\",\"Ref \"\"A\"\", two\",\"65,000\",2024-03-01\n\
                T2,\"line one\nline two\",\"1,000,000\",2024-03-01\n\
                T3,,\" 5 \",2024-03-01\n";
    let parsed = generic(text);
    assert_eq!(parsed.lines[0].transaction_id, "T,1");
    assert_eq!(parsed.lines[0].reference.as_deref(), Some("Ref \"A\", two"));
    assert_eq!(parsed.lines[0].amount_minor, 65_000);
    assert_eq!(
        parsed.lines[1].reference.as_deref(),
        Some("line one\nline two")
    );
    assert_eq!(parsed.lines[1].amount_minor, 1_000_000);
    // A quoted line break does not start a new row.
    assert_eq!(parsed.lines[2].row, 4);
    assert_eq!(parsed.lines[2].reference, None);
    assert_eq!(parsed.lines[2].amount_minor, 5);
}

#[test]
fn row_numbers_follow_the_spreadsheet_whatever_the_line_ends() {
    let body = [
        "",
        "",
        "transaction_id,amount,date",
        "T1,1,2024-03-01",
        "",
        "T2,2,2024-03-01",
        " , , ",
        "\"T3\",\"3\",\"2024-03-01\"",
        "",
        "",
        "T4,x,2024-03-01",
    ];
    // The bad amount of T4 is on spreadsheet row 11 whatever the line ends.
    for end in ["\n", "\r\n", "\r"] {
        for trailing in ["", end, &format!("{end}{end}")] {
            let text = body.join(end) + trailing;
            let errors = rejected(text.as_bytes(), &ColumnMapping::generic(), xof());
            assert_eq!(where_(&errors), [(11, "amount")], "{text:?}");
            let good = text.replace(",x,", ",4,");
            let rows: Vec<usize> = generic(&good).lines.iter().map(|l| l.row).collect();
            assert_eq!(rows, [4, 6, 8, 11], "{text:?}");
        }
    }
    // A quoted CRLF line break stays in one row.
    let text =
        "transaction_id,reference,amount,date\r\nT1,\"a\r\nb\",1,2024-03-01\r\nT2,,x,2024-03-01";
    let errors = rejected(text.as_bytes(), &ColumnMapping::generic(), xof());
    assert_eq!(where_(&errors), [(3, "amount")]);
}

#[test]
fn every_amount_style_is_accepted() {
    let cases: &[(&str, &str, i64)] = &[
        ("65000", "XOF", 65_000),
        ("65 000", "XOF", 65_000),
        ("65\u{a0}000", "XOF", 65_000),
        ("65\u{202f}000", "XOF", 65_000),
        ("65.000", "XOF", 65_000),
        ("65.000,00", "XOF", 65_000),
        ("65,000.00", "XOF", 65_000),
        ("65000.00", "XOF", 65_000),
        ("-20000", "XOF", -20_000),
        ("(20000)", "XOF", -20_000),
        ("65000.5", "USD", 6_500_050),
        ("65 000,50", "USD", 6_500_050),
        ("1,234.567", "TND", 1_234_567),
    ];
    let mut text = String::from("transaction_id;amount;currency;date\n");
    for (i, (amount, currency, _)) in cases.iter().enumerate() {
        text.push_str(&format!("T{i};\"{amount}\";{currency};2024-03-01\n"));
    }
    let parsed = generic(&text);
    for (line, (amount, _, minor)) in parsed.lines.iter().zip(cases) {
        assert_eq!(line.amount_minor, *minor, "{amount:?}");
    }
}

#[test]
fn every_date_style_is_accepted() {
    let day = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
    let morning = Utc.with_ymd_and_hms(2024, 3, 1, 10, 22, 33).unwrap();
    let minute = Utc.with_ymd_and_hms(2024, 3, 1, 10, 22, 0).unwrap();
    let cases = [
        ("2024-03-01", day),
        ("01/03/2024", day),
        ("1.3.2024", day),
        ("2024-03-01T10:22:33Z", morning),
        ("2024-03-01 10:22:33", morning),
        ("2024-03-01T12:22:33+02:00", morning),
        ("2024-03-01T10:22:33.000+00:00", morning),
        ("01/03/2024 10:22", minute),
        ("01/03/2024 10:22:33", morning),
    ];
    let mut text = String::from("transaction_id,amount,date\n");
    for (i, (date, _)) in cases.iter().enumerate() {
        text.push_str(&format!("T{i},1,{date}\n"));
    }
    let parsed = generic(&text);
    for (line, (date, at)) in parsed.lines.iter().zip(cases) {
        assert_eq!(line.at, at, "{date:?}");
    }
}

#[test]
fn mapping_options_apply() {
    let mapping = ColumnMapping::from_json(
        r#"{"name": "ke", "columns": {"transaction_id": "Receipt No.", "amount": "Paid Out",
            "date": "Completion Time", "status": "Transaction Status", "fee": "Charges"},
            "decimal_separator": ".", "date_format": "mdy", "utc_offset": "+03:00",
            "status_values": {"Success": "completed", "Cancelled": "failed"}}"#,
    )
    .unwrap();
    let text = "RECEIPT NO. , paid out,Completion Time,Transaction Status,Charges,Other\n\
                QFT1,1.000,03/01/2024 13:22,SUCCESS,15.00,ignored\n\
                QFT2,250.00,03/02/2024,cancelled,,\n";
    let parsed = parse_all(text.as_bytes(), &mapping, Currency::parse("KES").unwrap()).unwrap();
    let (a, b) = (&parsed.lines[0], &parsed.lines[1]);
    assert_eq!((a.amount_minor, a.fee_minor), (100, 1500));
    assert_eq!(a.at, Utc.with_ymd_and_hms(2024, 3, 1, 10, 22, 0).unwrap());
    assert_eq!(a.status, StatementStatus::Completed);
    assert_eq!(b.status, StatementStatus::Failed);
    assert_eq!(b.fee_minor, 0);
    assert_eq!(b.at, Utc.with_ymd_and_hms(2024, 3, 1, 21, 0, 0).unwrap());
}

#[test]
fn optional_columns_may_be_absent() {
    let parsed = generic("Transaction_ID , AMOUNT,Date\nT1,100,2024-03-01\n");
    let line = &parsed.lines[0];
    assert_eq!(line.reference, None);
    assert_eq!(line.msisdn, None);
    assert_eq!(line.currency, xof());
    assert_eq!(line.fee_minor, 0);
    assert_eq!(line.status, StatementStatus::Completed);
    assert_eq!(line.balance_after_minor, None);
    assert_eq!(parsed.opening_balance, None);
}

#[test]
fn opening_balance_of_a_line_that_did_not_move_the_float() {
    let parsed = generic(
        "transaction_id,amount,fee,status,date,balance_after\n\
         T1,100,5,failed,2024-03-01,1000\n\
         T2,100,5,completed,2024-03-01,895\n",
    );
    assert_eq!(parsed.opening_balance.unwrap().minor(), 1000);
    assert_eq!(parsed.closing_balance.unwrap().minor(), 895);
}

#[test]
fn duplicate_transaction_ids_are_kept_for_matching() {
    let parsed = generic("transaction_id,amount,date\nT1,100,2024-03-01\nT1,100,2024-03-01\n");
    assert_eq!(parsed.lines.len(), 2);
    assert_eq!(
        parsed.lines[0].transaction_id,
        parsed.lines[1].transaction_id
    );
}

#[test]
fn each_bad_cell_is_refused_with_its_row_and_column() {
    let header = "Transaction_ID,Reference,MSISDN,Amount,Currency,Fee,Status,Date,Balance_After";
    let good = "T1,R1,22376123456,65000,XOF,0,completed,2024-03-01,1000";
    let long_id = "X".repeat(129);
    let cases: Vec<(String, &str, &str)> = vec![
        (
            good.replace("T1,", ",").to_string(),
            "Transaction_ID",
            "required, but empty",
        ),
        (
            good.replace("T1,", &format!("{long_id},")),
            "Transaction_ID",
            "longer than 128",
        ),
        (good.replace("R1", &long_id), "Reference", "longer than 128"),
        (
            good.replace("22376123456", &"7".repeat(65)),
            "MSISDN",
            "longer than 64",
        ),
        (
            good.replace("65000", "65000 XOF"),
            "Amount",
            "not an amount",
        ),
        (good.replace("65000", ""), "Amount", "required, but empty"),
        (good.replace("65000", "abc"), "Amount", "not an amount"),
        (good.replace("65000", "\"65,00,0\""), "Amount", "grouped"),
        (good.replace("65000", "1e5"), "Amount", "not an amount"),
        (good.replace("65000", "20000-"), "Amount", "sign"),
        (good.replace("65000", "650.5"), "Amount", "more decimals"),
        (
            good.replace("XOF", "EUR").replace("65000", "1.000"),
            "Amount",
            "ambiguous",
        ),
        (good.replace("XOF", "FCFA"), "Currency", "unknown currency"),
        (good.replace(",0,", ",x,"), "Fee", "not an amount"),
        (
            good.replace("completed", ""),
            "Status",
            "required, but empty",
        ),
        (
            good.replace("completed", "done"),
            "Status",
            "unknown status",
        ),
        (
            good.replace("2024-03-01", ""),
            "Date",
            "required, but empty",
        ),
        (
            good.replace("2024-03-01", "31/02/2024"),
            "Date",
            "no such day",
        ),
        (good.replace("2024-03-01", "March 1"), "Date", "not a date"),
        (
            good.replace("2024-03-01", "01/03/24"),
            "Date",
            "four digits",
        ),
        (
            good.replace("2024-03-01", "2024-03-01T25:00"),
            "Date",
            "no such time",
        ),
        (
            good.replace(",1000", ",1000.5"),
            "Balance_After",
            "more decimals",
        ),
    ];
    for (row, column, reason) in &cases {
        let text = format!("{header}\n{good}\n{row}\n");
        let errors = rejected(text.as_bytes(), &ColumnMapping::generic(), xof());
        assert_eq!(where_(&errors), [(3, *column)], "{row}");
        assert!(
            errors[0].reason.contains(reason),
            "{row}: {:?} should say {reason:?}",
            errors[0].reason
        );
        assert_eq!(
            errors[0].to_string(),
            format!("row 3, column {column}: {}", errors[0].reason)
        );
    }
}

#[test]
fn bad_rows_as_a_whole_are_refused() {
    let text = "transaction_id,amount,date\n\
                T1,100\n\
                T2,65,000,2024-03-01\n\
                T3,100,2024-03-01,, \n";
    let errors = rejected(text.as_bytes(), &ColumnMapping::generic(), xof());
    assert_eq!(where_(&errors), [(2, "date"), (3, "")]);
    assert!(errors[0].reason.contains("ends early"));
    assert!(
        errors[1].reason.contains("double quotes"),
        "{}",
        errors[1].reason
    );
    assert_eq!(
        errors[1].to_string(),
        format!("row 3: {}", errors[1].reason)
    );
}

#[test]
fn cells_that_are_not_utf8_are_refused_where_mapped() {
    let mut bytes = b"transaction_id,reference,amount,date,note\n".to_vec();
    bytes.extend_from_slice(b"T1,R\xe9f,100,2024-03-01,caf\xe9\n");
    let errors = rejected(&bytes, &ColumnMapping::generic(), xof());
    assert_eq!(where_(&errors), [(2, "reference")]);
    assert!(errors[0].reason.contains("UTF-8"));
}

#[test]
fn every_error_of_every_row_is_reported_and_no_line_returned() {
    let text = "transaction_id,amount,currency,status,date\n\
                ,x,XOF,done,yesterday\n\
                T2,100,XOF,completed,2024-03-01\n\
                T3,100,???,completed,2024-03-01\n";
    let errors = rejected(text.as_bytes(), &ColumnMapping::generic(), xof());
    assert_eq!(
        where_(&errors),
        [
            (2, "transaction_id"),
            (2, "amount"),
            (2, "status"),
            (2, "date"),
            (4, "currency")
        ]
    );
}

#[test]
fn the_error_list_is_capped_and_the_rest_counted() {
    let mut text = String::from("transaction_id,amount,date\n");
    for i in 0..1500 {
        text.push_str(&format!("T{i},bad,2024-03-01\n"));
    }
    match parse_all(text.as_bytes(), &ColumnMapping::generic(), xof()) {
        Err(StatementError::Rejected { errors, more }) => {
            assert_eq!(errors.len(), MAX_ROW_ERRORS);
            assert_eq!(more, 500);
            assert_eq!(errors[0].row, 2);
            assert_eq!(errors[999].row, 1001);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn reasons_never_echo_the_cell() {
    // A mapping that reads the phone number column for every value field.
    let mapping = ColumnMapping {
        columns: Columns {
            transaction_id: "id".into(),
            reference: None,
            msisdn: None,
            amount: "phone".into(),
            currency: Some("phone2".into()),
            fee: Some("phone3".into()),
            status: Some("phone4".into()),
            date: "phone5".into(),
            balance_after: Some("phone6".into()),
        },
        decimal_separator: DecimalSeparator::Comma,
        ..ColumnMapping::generic()
    };
    let phone = "+223 76 12 34 56";
    let text = format!(
        "id,phone,phone2,phone3,phone4,phone5,phone6\nT1,{phone},{phone},{phone},{phone},{phone},{phone}\n"
    );
    let errors = rejected(text.as_bytes(), &mapping, xof());
    // currency, status, date (the amounts are not read without a currency)
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let mut without_currency = mapping.clone();
    without_currency.columns.currency = None;
    let more = rejected(text.as_bytes(), &without_currency, xof());
    // amount, fee, status, date, balance_after
    assert_eq!(more.len(), 5, "{more:#?}");
    for error in errors.iter().chain(&more) {
        for needle in ["76", "12 34", "223"] {
            assert!(!error.reason.contains(needle), "{error}");
        }
    }
}

#[test]
fn file_level_refusals() {
    let mapping = ColumnMapping::generic();
    let refuse = |bytes: &[u8]| parse_all(bytes, &mapping, xof()).unwrap_err();

    assert_eq!(refuse(b""), StatementError::Empty);
    assert_eq!(refuse(b"\xEF\xBB\xBF\r\n  \n"), StatementError::Empty);
    assert_eq!(
        refuse(b"transaction_id,date,fee\nT1,2024-03-01,1\n"),
        StatementError::MissingColumns {
            columns: vec!["amount".into()]
        }
    );
    assert_eq!(
        refuse(b"reference;currency\n"),
        StatementError::MissingColumns {
            columns: vec!["transaction_id".into(), "amount".into(), "date".into()]
        }
    );
    assert_eq!(
        refuse(b"transaction_id,amount,date,Amount\n"),
        StatementError::DuplicateColumn {
            column: "Amount".into()
        }
    );
    assert_eq!(
        refuse(b"transaction_id,amount,date,caf\xe9\n"),
        StatementError::HeaderNotUtf8
    );
    let long = vec![b'x'; (1 << 20) + 10];
    assert_eq!(refuse(&long), StatementError::HeaderTooLong);

    let missing = refuse(b"transaction_id,date\n").to_row_errors();
    assert_eq!(where_(&missing), [(1, "amount")]);

    let mut bad_mapping = ColumnMapping::generic();
    bad_mapping.columns.fee = Some("Amount".into());
    match parse_all(b"transaction_id,amount,date\n", &bad_mapping, xof()) {
        Err(StatementError::Mapping(e)) => assert!(e.to_string().contains("columns.fee"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_header_alone_is_an_empty_statement() {
    let parsed = generic("transaction_id,amount,date\n");
    assert!(parsed.lines.is_empty());
    assert_eq!(parsed.opening_balance, None);
}

/// Hands out a few bytes per read, and can fail after some.
struct Trickle<'a> {
    bytes: &'a [u8],
    step: usize,
    fail_after: Option<usize>,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(left) = self.fail_after.as_mut() {
            if *left == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            *left -= 1;
        }
        let n = self.step.min(buf.len()).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

#[test]
fn streaming_gives_the_same_result_as_bytes() {
    let bytes = format!("\u{feff}{}", SIMULATOR_SAMPLE.replace('\n', "\r\n")).into_bytes();
    let all = parse_all(&bytes, &ColumnMapping::simulator(), xof()).unwrap();
    for step in [1, 2, 7, 4096] {
        let streamed = parse_reader(
            Trickle {
                bytes: &bytes,
                step,
                fail_after: None,
            },
            &ColumnMapping::simulator(),
            xof(),
        )
        .unwrap();
        assert_eq!(streamed, all, "step {step}");
    }
}

#[test]
fn the_reader_streams_lines_and_errors_and_hashes_at_the_end() {
    let text = "transaction_id,amount,date\nT1,100,2024-03-01\n,x,2024-03-01\nT3,300,2024-03-01\n";
    let mut reader =
        StatementReader::new(text.as_bytes(), &ColumnMapping::generic(), xof()).unwrap();
    assert_eq!(reader.header(), ["transaction_id", "amount", "date"]);
    assert_eq!(reader.next().unwrap().unwrap().transaction_id, "T1");
    assert_eq!(reader.sha256(), None, "not read to the end yet");
    let e1 = reader.next().unwrap().unwrap_err();
    let e2 = reader.next().unwrap().unwrap_err();
    assert_eq!(where_(&[e1, e2]), [(3, "transaction_id"), (3, "amount")]);
    assert_eq!(reader.next().unwrap().unwrap().row, 4);
    assert!(reader.next().is_none());
    assert!(reader.next().is_none());
    assert_eq!(reader.sha256(), Some(content_sha256(text.as_bytes())));
    assert_eq!(reader.bytes_read(), text.len() as u64);
}

#[test]
fn a_read_error_rejects_the_statement() {
    let mut text = String::from("transaction_id,amount,date\n");
    for i in 0..100 {
        text.push_str(&format!("T{i},100,2024-03-01\n"));
    }
    let source = Trickle {
        bytes: text.as_bytes(),
        step: 64,
        fail_after: Some(10),
    };
    match parse_reader(source, &ColumnMapping::generic(), xof()) {
        Err(StatementError::Read(reason)) => assert!(reason.contains("disk on fire")),
        other => panic!("{other:?}"),
    }
}

/// A statement of `n` lines in the simulator's format, with some variety.
fn generated_statement(n: usize) -> Vec<u8> {
    use std::fmt::Write;
    let mut out = String::with_capacity(n * 110);
    out.push_str(
        "transaction_id,reference,msisdn,amount,currency,fee,status,completed_at,balance_after\n",
    );
    let mut balance: i64 = 1_000_000_000_000;
    for i in 0..n {
        let amount = 5_000 + (i as i64 % 97) * 1_000;
        balance -= amount + 25;
        let _ = writeln!(
            out,
            "SIMTX{i:010},PL-{i},+2237{:07},{amount},XOF,25,completed,2024-03-01T10:{:02}:{:02}.{:06}+00:00,{balance}",
            i % 10_000_000,
            (i / 60) % 60,
            i % 60,
            i % 1_000_000,
        );
    }
    out.into_bytes()
}

#[test]
fn a_generated_statement_balances() {
    let bytes = generated_statement(2_000);
    let parsed = parse_all(&bytes, &ColumnMapping::simulator(), xof()).unwrap();
    assert_eq!(parsed.lines.len(), 2_000);
    assert_eq!(parsed.opening_balance.unwrap().minor(), 1_000_000_000_000);
    let spent: i64 = parsed
        .lines
        .iter()
        .map(|l| l.amount_minor + l.fee_minor)
        .sum();
    assert_eq!(
        parsed.closing_balance.unwrap().minor(),
        1_000_000_000_000 - spent
    );
}

#[test]
#[ignore = "a million lines: run with `cargo test --release -p cva-reconciliation -- --ignored`"]
fn a_million_line_statement_parses() {
    let n = 1_000_000;
    let bytes = generated_statement(n);
    let started = std::time::Instant::now();
    let parsed = parse_all(&bytes, &ColumnMapping::simulator(), xof()).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(parsed.lines.len(), n);
    assert_eq!(parsed.lines[n - 1].row, n + 1);
    assert_eq!(parsed.sha256, content_sha256(&bytes));
    eprintln!(
        "{n} lines, {} MB, in {elapsed:.2?}: {:.0} lines/s",
        bytes.len() / 1_000_000,
        n as f64 / elapsed.as_secs_f64()
    );
}
