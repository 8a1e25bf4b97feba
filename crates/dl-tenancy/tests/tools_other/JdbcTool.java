// JDBC (Debian 12: libpostgresql-jdbc-java, pgjdbc 42.5) against a workspace through the
// revealed jdbc_url and DriverManager, with pgjdbc's defaults (prepareThreshold 5: from a
// PreparedStatement's fifth run on, it is a named server-side statement). `migrate` creates a
// table unqualified (it lands in tenant_custom) and adds a column, both idempotent; `app`
// reads the seed's query 200 times over 4 connections (50 runs of one PreparedStatement
// each) and does the seed's upsert with jsonb parameters 6 times. Prints one JSON line.
//
// Env: JDBC_URL (override login), READ_JDBC_URL (read login), DL_READ_QUERY and DL_UPSERT
// (the seed's SQL, $n placeholders), DL_KEY (the key the upsert writes).

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.postgresql.util.PGobject;

public class JdbcTool {
    static final Pattern NUMBERED = Pattern.compile("^person:(\\d+)$");

    // `person:N` -> `Name N`, `person:<tool>` -> `Written by <tool>`.
    static boolean right(String key, String name) {
        Matcher m = NUMBERED.matcher(key);
        if (m.matches()) {
            return name.equals("Name " + m.group(1));
        }
        return name.equals("Written by " + key.substring("person:".length()));
    }

    static String quote(String s) {
        if (s == null) {
            return "null";
        }
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n") + "\"";
    }

    // recipe: JDBC (pgjdbc)
    // The revealed jdbc_url as it is (user, password, sslmode=verify-full, sslrootcert);
    // PreparedStatements with pgjdbc's defaults work through the pooled one, jsonb as PGobject.
    static Connection open(String jdbcUrl) throws SQLException {
        return DriverManager.getConnection(jdbcUrl);
    }

    static PGobject jsonb(String json) throws SQLException {
        PGobject value = new PGobject();
        value.setType("jsonb");
        value.setValue(json);
        return value;
    }

    // The seed's upsert, with JDBC's `?` for PostgreSQL's `$1..$4`.
    static void correct(Connection c, String upsert, String key, String identityPatch) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(upsert.replaceAll("\\$\\d+", "?"))) {
            ps.setString(1, key);
            ps.setString(2, "verified");
            ps.setObject(3, jsonb(identityPatch));
            ps.setObject(4, jsonb("{\"source\":\"app\"}"));
            ps.executeUpdate();
        }
    }
    // end recipe

    public static void main(String[] args) throws Exception {
        String mode = args[0];
        if (mode.equals("migrate")) {
            try (Connection c = open(System.getenv("JDBC_URL")); Statement st = c.createStatement()) {
                // recipe: JDBC migration
                // Tables created unqualified land in tenant_custom (the override login's schema).
                st.execute("CREATE TABLE IF NOT EXISTS jdbc_gadgets (id bigserial PRIMARY KEY, name text NOT NULL)");
                st.execute("ALTER TABLE jdbc_gadgets ADD COLUMN IF NOT EXISTS color text");
                // end recipe
                ResultSet rs = st.executeQuery("SELECT current_schema()");
                rs.next();
                System.out.println("{\"tool\":\"jdbc\",\"mode\":\"migrate\",\"current_schema\":" + quote(rs.getString(1)) + "}");
            }
            return;
        }
        if (mode.equals("connect")) {
            // Only connects (the test points sslrootcert at another CA: this must be refused).
            try (Connection c = open(System.getenv("JDBC_URL"))) {
                c.createStatement().execute("SELECT 1");
                System.out.println("{\"tool\":\"jdbc\",\"mode\":\"connect\",\"connected\":true}");
            } catch (SQLException e) {
                System.out.println("{\"tool\":\"jdbc\",\"mode\":\"connect\",\"connected\":false,\"error\":" + quote(e.getMessage()) + "}");
            }
            return;
        }
        String readUrl = System.getenv("READ_JDBC_URL");
        String readQuery = System.getenv("DL_READ_QUERY");
        AtomicInteger queries = new AtomicInteger();
        AtomicInteger wrong = new AtomicInteger();
        List<String> errors = java.util.Collections.synchronizedList(new ArrayList<>());
        AtomicInteger serverPrepared = new AtomicInteger();
        List<Thread> threads = new ArrayList<>();
        for (int t = 0; t < 4; t++) {
            Thread th = new Thread(() -> {
                try (Connection c = open(readUrl); PreparedStatement ps = c.prepareStatement(readQuery)) {
                    for (int i = 0; i < 50; i++) {
                        try (ResultSet rs = ps.executeQuery()) {
                            int n = 0, bad = 0;
                            while (rs.next()) {
                                n++;
                                if (!right(rs.getString(1), rs.getString(2))) {
                                    bad++;
                                }
                            }
                            wrong.addAndGet(n != 20 ? 1 : bad);
                        } catch (SQLException e) {
                            errors.add(e.getSQLState() + ": " + e.getMessage());
                        }
                        queries.incrementAndGet();
                    }
                    if (ps.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare()) {
                        serverPrepared.incrementAndGet();
                    }
                } catch (SQLException e) {
                    errors.add(e.getSQLState() + ": " + e.getMessage());
                }
            });
            threads.add(th);
            th.start();
        }
        for (Thread th : threads) {
            th.join();
        }
        String key = System.getenv("DL_KEY");
        String tool = key.substring("person:".length());
        String upsertError = null, name = null, payloadName = null, status = null;
        try (Connection w = open(System.getenv("JDBC_URL")); Connection r = open(readUrl)) {
            // Past prepareThreshold: the last runs use a named server-side statement.
            for (int i = 0; i < 6; i++) {
                correct(w, System.getenv("DL_UPSERT"), key, "{\"display_name\":\"Written by draft " + i + "\"}");
            }
            correct(w, System.getenv("DL_UPSERT"), key, "{\"display_name\":" + quote("Written by " + tool) + "}");
            try (PreparedStatement ps = r.prepareStatement(
                    "SELECT display_name, identity_payload->>'display_name', status FROM dl_resolved.people WHERE identity_key = ?")) {
                ps.setString(1, key);
                try (ResultSet rs = ps.executeQuery()) {
                    if (rs.next()) {
                        name = rs.getString(1);
                        payloadName = rs.getString(2);
                        status = rs.getString(3);
                    }
                }
            }
        } catch (SQLException e) {
            upsertError = e.getSQLState() + ": " + e.getMessage();
        }
        System.out.println("{\"tool\":\"jdbc\",\"mode\":\"app\",\"queries\":" + queries.get()
                + ",\"errors\":" + errors.size()
                + ",\"first_error\":" + quote(errors.isEmpty() ? null : errors.get(0))
                + ",\"wrong\":" + wrong.get()
                + ",\"connections\":4,\"server_prepared\":" + serverPrepared.get()
                + ",\"upsert_error\":" + quote(upsertError)
                + ",\"resolved_name\":" + quote(name)
                + ",\"resolved_payload_name\":" + quote(payloadName)
                + ",\"resolved_status\":" + quote(status) + "}");
    }
}
