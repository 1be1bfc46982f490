//! A throwaway OpenLDAP `slapd` on 127.0.0.1: its own cn=config and mdb database in a
//! temp dir, loaded offline with slapadd, started on a free port and killed on drop.
//! Optionally serves LDAPS and StartTLS with a certificate made for the test.

use super::run_ok as run;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

pub const SUFFIX: &str = "dc=example,dc=org";
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
pub const ROOT_PW: &str = "rootsecret";
/// The account mxisd binds as (not the root DN: it has the server's limits, except
/// unlimited paged results, as a directory admin would set up for a sync account).
pub const SYNC_DN: &str = "cn=mxisd,dc=example,dc=org";
pub const SYNC_PW: &str = "syncsecret";

fn need(binary: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(binary);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{binary} is not installed: the LDAP tests need a real OpenLDAP. Install it with \
         `apt-get install slapd ldap-utils` (tests/run.sh does this)"
    );
}

pub struct Slapd {
    pub port: u16,
    pub url: String,
    /// `ldaps://` URL when started with TLS.
    pub ldaps_url: Option<String>,
    /// PEM of the CA that signed the server certificate (TLS only).
    pub ca_pem: Option<String>,
    dir: TempDir,
    ldaps_port: Option<u16>,
    running: bool,
}

/// The base entries: the suffix, `ou=people` and the sync account.
pub fn base_ldif() -> String {
    format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: {SYNC_DN}\nobjectClass: person\ncn: mxisd\nsn: sync\nuserPassword: {SYNC_PW}\n\n"
    )
}

/// An inetOrgPerson under `ou=people`.
pub fn person(uid: &str, name: &str, mails: &[&str], phones: &[&str]) -> String {
    let mut s = format!(
        "dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {name}\nsn: {name}\ndisplayName: {name}\n"
    );
    for m in mails {
        s.push_str(&format!("mail: {m}\n"));
    }
    for p in phones {
        s.push_str(&format!("telephoneNumber: {p}\n"));
    }
    s.push('\n');
    s
}

impl Slapd {
    /// Starts slapd with the base entries plus `ldif` (loaded offline).
    pub fn start(ldif: &str) -> Self {
        Self::start_opts(ldif, false)
    }

    /// Same, also serving LDAPS (and StartTLS on the plain port) with a certificate
    /// for 127.0.0.1 signed by a test CA.
    pub fn start_tls(ldif: &str) -> Self {
        Self::start_opts(ldif, true)
    }

    fn start_opts(ldif: &str, tls: bool) -> Self {
        let slapadd = need("slapadd");
        need("slapd");
        need("ldapsearch");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("config")).unwrap();
        std::fs::create_dir_all(d.join("data")).unwrap();
        let mut ca_pem = None;
        let mut tls_config = String::new();
        if tls {
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            ca_params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "mxisd test CA");
            let ca = ca_params.self_signed(&ca_key).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "127.0.0.1");
            let issuer = rcgen::Issuer::new(ca_params, ca_key);
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(d.join("cert.pem"), cert.pem()).unwrap();
            std::fs::write(d.join("key.pem"), key.serialize_pem()).unwrap();
            ca_pem = Some(ca.pem());
            tls_config = format!(
                "olcTLSCertificateFile: {0}/cert.pem\nolcTLSCertificateKeyFile: {0}/key.pem\n",
                d.display()
            );
        }
        let config = format!(
            "dn: cn=config\nobjectClass: olcGlobal\ncn: config\nolcPidFile: {d}/slapd.pid\nolcArgsFile: {d}/slapd.args\n{tls_config}\n\
             dn: cn=module{{0}},cn=config\nobjectClass: olcModuleList\ncn: module{{0}}\nolcModulePath: /usr/lib/ldap\nolcModuleLoad: back_mdb\n\n\
             dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n\
             include: file:///etc/ldap/schema/core.ldif\n\n\
             include: file:///etc/ldap/schema/cosine.ldif\n\n\
             include: file:///etc/ldap/schema/nis.ldif\n\n\
             include: file:///etc/ldap/schema/inetorgperson.ldif\n\n\
             dn: olcDatabase={{-1}}frontend,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcFrontendConfig\nolcDatabase: {{-1}}frontend\n\n\
             dn: olcDatabase={{0}}config,cn=config\nobjectClass: olcDatabaseConfig\nolcDatabase: {{0}}config\nolcAccess: {{0}}to * by * none\n\n\
             dn: olcDatabase={{1}}mdb,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcMdbConfig\nolcDatabase: {{1}}mdb\n\
             olcSuffix: {SUFFIX}\nolcDbDirectory: {d}/data\nolcDbMaxSize: 4294967296\nolcDbNoSync: TRUE\n\
             olcRootDN: {ROOT_DN}\nolcRootPW: {ROOT_PW}\n\
             olcLimits: dn.exact=\"{SYNC_DN}\" size.prtotal=unlimited\n\
             olcDbIndex: objectClass eq\nolcDbIndex: uid,mail,telephoneNumber,cn eq\n\
             olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none\n\
             olcAccess: {{1}}to dn.regex=\"^uid=private[^,]*,{PEOPLE}$\" by users read by * none\n\
             olcAccess: {{2}}to * by * read\n",
            d = d.display()
        );
        std::fs::write(d.join("config.ldif"), config).unwrap();
        run(Command::new(&slapadd)
            .args(["-n", "0", "-F"])
            .arg(d.join("config"))
            .arg("-l")
            .arg(d.join("config.ldif")));
        std::fs::write(d.join("users.ldif"), format!("{}{ldif}", base_ldif())).unwrap();
        run(Command::new(&slapadd)
            .args(["-q", "-n", "1", "-F"])
            .arg(d.join("config"))
            .arg("-l")
            .arg(d.join("users.ldif")));
        let mut slapd = Slapd {
            port: 0,
            url: String::new(),
            ldaps_url: None,
            ca_pem,
            dir,
            ldaps_port: None,
            running: false,
        };
        slapd.launch(tls);
        slapd
    }

    fn launch(&mut self, tls: bool) {
        // A port picked free can be taken by the time slapd binds: try a few.
        for _ in 0..5 {
            let port = if self.port == 0 {
                super::free_port()
            } else {
                self.port
            };
            let ldaps_port = match (tls, self.ldaps_port) {
                (false, _) => None,
                (true, Some(p)) => Some(p),
                (true, None) => Some(super::free_port()),
            };
            let mut urls = format!("ldap://127.0.0.1:{port}/");
            if let Some(p) = ldaps_port {
                urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
            }
            let status = Command::new(need("slapd"))
                .arg("-F")
                .arg(self.dir.path().join("config"))
                .args(["-h", &urls])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if !status.success() {
                continue;
            }
            self.port = port;
            self.ldaps_port = ldaps_port;
            self.url = format!("ldap://127.0.0.1:{port}");
            self.ldaps_url = ldaps_port.map(|p| format!("ldaps://127.0.0.1:{p}"));
            self.running = true;
            for _ in 0..200 {
                let ok = Command::new(need("ldapsearch"))
                    .args([
                        "-x",
                        "-H",
                        &self.url,
                        "-s",
                        "base",
                        "-b",
                        "",
                        "namingContexts",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            panic!("slapd did not answer on {}", self.url);
        }
        panic!(
            "slapd would not start (see `slapd -d 1 -F {}/config`)",
            self.dir.path().display()
        );
    }

    fn pid(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("slapd.pid"))
            .ok()
            .map(|p| p.trim().to_owned())
    }

    /// Stops slapd (SIGTERM) and waits until it is gone.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            for _ in 0..400 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        self.running = false;
    }

    /// Starts it again on the same ports with the same data.
    pub fn restart(&mut self) {
        let tls = self.ldaps_port.is_some();
        self.launch(tls);
    }

    /// Applies an LDIF change (`changetype: add|modify|delete` records) as the root DN.
    pub fn modify(&self, ldif: &str) {
        let path = self.dir.path().join("change.ldif");
        std::fs::write(&path, ldif).unwrap();
        run(Command::new(need("ldapmodify"))
            .args(["-x", "-H", &self.url, "-D", ROOT_DN, "-w", ROOT_PW, "-f"])
            .arg(&path));
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
