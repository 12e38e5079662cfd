//! Apache Parquet: one document per row of a UTF-8 string column (streamed row group by row group).

use std::path::PathBuf;

use parquet::basic::{ConvertedType, LogicalType, Type as PhysicalType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::RowAccessor;
use parquet::schema::types::Type;

use super::{Document, DocumentReader, ReadStats};
use crate::error::{DataError, Result};

pub(crate) struct ParquetReader {
    rows: RowIter<'static>,
    path: PathBuf,
}

impl ParquetReader {
    /// Opens `file` and picks the column: `field` if it names a string column, otherwise, when `field` is the
    /// default `text` and the file has exactly one string column, that one.
    pub(crate) fn open(file: std::fs::File, path: PathBuf, field: &str) -> Result<Self> {
        let err = |reason: String| DataError::Parquet {
            path: path.clone(),
            reason,
        };
        let reader = SerializedFileReader::new(file).map_err(|e| err(e.to_string()))?;
        let schema = reader.metadata().file_metadata().schema_descr_ptr();
        let root = schema.root_schema();
        let fields = root.get_fields();
        let is_string = |t: &Type| {
            t.is_primitive()
                && t.get_physical_type() == PhysicalType::BYTE_ARRAY
                && !(t.get_basic_info().has_repetition()
                    && t.get_basic_info().repetition() == parquet::basic::Repetition::REPEATED)
                && (matches!(
                    t.get_basic_info().logical_type_ref(),
                    Some(LogicalType::String)
                ) || t.get_basic_info().converted_type() == ConvertedType::UTF8)
        };
        let strings: Vec<&std::sync::Arc<Type>> = fields.iter().filter(|t| is_string(t)).collect();
        let chosen = match fields.iter().find(|t| t.name() == field) {
            Some(t) if is_string(t) => t.clone(),
            Some(_) => {
                return Err(err(format!(
                    "column `{field}` is not a UTF-8 string column"
                )))
            }
            None if field == "text" && strings.len() == 1 => strings[0].clone(),
            None => {
                let names: Vec<&str> = strings.iter().map(|t| t.name()).collect();
                return Err(err(format!(
                    "no string column `{field}`; its string columns are [{}]: pass --text-field NAME",
                    names.join(", ")
                )));
            }
        };
        let projection = Type::group_type_builder(root.name())
            .with_fields(vec![chosen])
            .build()
            .map_err(|e| err(e.to_string()))?;
        let rows = RowIter::from_file_into(Box::new(reader))
            .project(Some(projection))
            .map_err(|e| err(e.to_string()))?;
        Ok(Self { rows, path })
    }
}

impl DocumentReader for ParquetReader {
    fn next_document(&mut self, stats: &mut ReadStats) -> Result<Option<Document>> {
        for row in self.rows.by_ref() {
            let row = row.map_err(|e| DataError::Parquet {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
            match row.get_string(0) {
                Ok(text) if !text.is_empty() => {
                    return Ok(Some(Document {
                        text: text.clone(),
                        ends_document: true,
                    }))
                }
                _ => stats.n_empty += 1,
            }
        }
        Ok(None)
    }
}
