"""Counting rows in a dump stream: both INSERT layouts, hostile strings, any chunking."""

from __future__ import annotations

import pytest

from coai_operator.engine.rowcounts import DumpRowCounter, quote_ident

# Newer mariadb-dump: one row per line. Strings hold "(", "),(", quotes, escaped newlines.
ROW_PER_LINE = rb"""
--
-- Table structure for table `we``ird (t)`
--

DROP TABLE IF EXISTS `we``ird (t)`;
CREATE TABLE `we``ird (t)` (
  `id` int(11) NOT NULL,
  `body` text DEFAULT NULL COMMENT 'a (comment)'
) ENGINE=InnoDB;

LOCK TABLES `we``ird (t)` WRITE;
/*!40000 ALTER TABLE `we``ird (t)` DISABLE KEYS */;
INSERT INTO `we``ird (t)` VALUES
(1,'he),(llo\n\'x\''),
(2,'w\xc3\xb6rld \'quoted\' \\'),
(3,NULL),
(4,'(((');
/*!40000 ALTER TABLE `we``ird (t)` ENABLE KEYS */;
UNLOCK TABLES;
CREATE TABLE `empty` (
  `id` int(11) DEFAULT NULL
);
LOCK TABLES `empty` WRITE;
/*!40000 ALTER TABLE `empty` DISABLE KEYS */;
/*!40000 ALTER TABLE `empty` ENABLE KEYS */;
UNLOCK TABLES;
DELIMITER ;;
/*!50003 CREATE*/ /*!50003 TRIGGER tr AFTER INSERT ON empty FOR EACH ROW
INSERT INTO `we``ird (t)` VALUES (NEW.id, 'x') */;;
DELIMITER ;
DELIMITER ;;
CREATE DEFINER=`u`@`%` PROCEDURE `p`()
BEGIN
CREATE TABLE `not_a_table` (id INT);
LOCK TABLES `not_a_table` WRITE;
INSERT INTO `we``ird (t)` VALUES (9, 'x'), (10, 'y');
END
;;
DELIMITER ;
-- Dump completed on 2026-01-01
"""

# mysqldump / older mariadb-dump: one extended INSERT per line, several statements per table.
STATEMENT_PER_LINE = (
    b"CREATE TABLE `users` (\n  `id` int\n);\n"
    b"LOCK TABLES `users` WRITE;\n"
    b"INSERT INTO `users` VALUES (1,'a'),(2,'b\\'),(c'),(3,0x28290029);\n"
    b"INSERT INTO `users` VALUES (4,''),(5,'it''s'),(6,-1.5e+20);\n"
    b"UNLOCK TABLES;\n"
)

EXPECTED = {"we`ird (t)": 4, "empty": 0}


def _count(data: bytes, chunk: int) -> dict[str, int]:
    counter = DumpRowCounter()
    for i in range(0, len(data), chunk):
        counter.feed(data[i:i + chunk])
    return counter.finish()


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_row_per_line_layout(chunk: int) -> None:
    assert _count(ROW_PER_LINE, chunk) == EXPECTED


@pytest.mark.parametrize("chunk", [1, 5, 1 << 20])
def test_statement_per_line_layout(chunk: int) -> None:
    assert _count(STATEMENT_PER_LINE, chunk) == {"users": 6}


def test_no_trailing_newline_and_crlf() -> None:
    data = STATEMENT_PER_LINE.replace(b"\n", b"\r\n").rstrip(b"\r\n")
    assert _count(data, 4) == {"users": 6}


def test_quote_ident_escapes_backticks() -> None:
    assert quote_ident("plain") == "`plain`"
    assert quote_ident("a`b; DROP TABLE x; --") == "`a``b; DROP TABLE x; --`"
