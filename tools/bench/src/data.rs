//! Word lists for the generator. Names are `(display, ascii)` pairs: the
//! display form goes into name columns (plenty of non-ASCII), the ASCII form
//! into email addresses.

/// The 33 columns, in file order.
pub const HEADER: [&str; 33] = [
    "Employee ID",
    "First Name",
    "Last Name",
    "Preferred Name",
    "Email",
    "Personal Email",
    "Mobile Phone",
    "Office Phone",
    "Home Phone",
    "Department",
    "Location",
    "Region",
    "Job Title",
    "Manager ID",
    "Cost Center",
    "Employment Type",
    "Status",
    "Hire Date",
    "Building",
    "Floor",
    "Desk",
    "Address Line 1",
    "Address Line 2",
    "City",
    "State",
    "Postal Code",
    "Country",
    "Emergency Contact",
    "Emergency Phone",
    "Language",
    "Shift",
    "Union",
    "Notes",
];

pub const COL_ID: usize = 0;
pub const COL_MOBILE: usize = 6;
pub const COL_DEPARTMENT: usize = 9;
pub const COL_LOCATION: usize = 10;
pub const COL_TITLE: usize = 12;
pub const COL_STATUS: usize = 16;

pub const FIRST_NAMES: &[(&str, &str)] = &[
    ("James", "james"),
    ("Mary", "mary"),
    ("John", "john"),
    ("Patricia", "patricia"),
    ("Robert", "robert"),
    ("Jennifer", "jennifer"),
    ("Michael", "michael"),
    ("Linda", "linda"),
    ("William", "william"),
    ("Elizabeth", "elizabeth"),
    ("David", "david"),
    ("Barbara", "barbara"),
    ("Richard", "richard"),
    ("Susan", "susan"),
    ("Joseph", "joseph"),
    ("Jessica", "jessica"),
    ("Thomas", "thomas"),
    ("Sarah", "sarah"),
    ("Charles", "charles"),
    ("Karen", "karen"),
    ("Christopher", "christopher"),
    ("Nancy", "nancy"),
    ("Daniel", "daniel"),
    ("Lisa", "lisa"),
    ("Matthew", "matthew"),
    ("Margaret", "margaret"),
    ("Anthony", "anthony"),
    ("Emily", "emily"),
    ("Mark", "mark"),
    ("Sandra", "sandra"),
    ("Oliver", "oliver"),
    ("Emma", "emma"),
    ("Noah", "noah"),
    ("Olivia", "olivia"),
    ("Liam", "liam"),
    ("Ava", "ava"),
    ("Lucas", "lucas"),
    ("Mia", "mia"),
    ("Sophie", "sophie"),
    ("Leon", "leon"),
    ("Hannah", "hannah"),
    ("José", "jose"),
    ("Zoë", "zoe"),
    ("Łukasz", "lukasz"),
    ("Søren", "soren"),
    ("François", "francois"),
    ("Björn", "bjorn"),
    ("Chloé", "chloe"),
    ("Renée", "renee"),
    ("André", "andre"),
    ("Jürgen", "jurgen"),
    ("Małgorzata", "malgorzata"),
    ("Siobhán", "siobhan"),
    ("Seán", "sean"),
    ("Núria", "nuria"),
    ("Raphaël", "raphael"),
    ("Gaëlle", "gaelle"),
    ("Mónica", "monica"),
    ("Ángel", "angel"),
    ("Mathéo", "matheo"),
    ("Ingrid", "ingrid"),
    ("Hiroshi", "hiroshi"),
    ("Yuki", "yuki"),
    ("Haruto", "haruto"),
    ("Sakura", "sakura"),
    ("Wei", "wei"),
    ("伟", "wei"),
    ("芳", "fang"),
    ("娜", "na"),
    ("Ahmed", "ahmed"),
    ("Fatima", "fatima"),
    ("Priya", "priya"),
    ("Arjun", "arjun"),
    ("Olga", "olga"),
    ("Dmitri", "dmitri"),
    ("Aoife", "aoife"),
    ("Mohammed", "mohammed"),
    ("Chen", "chen"),
    ("Minh", "minh"),
    ("Carmen", "carmen"),
];

pub const LAST_NAMES: &[(&str, &str)] = &[
    ("Smith", "smith"),
    ("Johnson", "johnson"),
    ("Williams", "williams"),
    ("Brown", "brown"),
    ("Jones", "jones"),
    ("Miller", "miller"),
    ("Davis", "davis"),
    ("Wilson", "wilson"),
    ("Anderson", "anderson"),
    ("Thomas", "thomas"),
    ("Taylor", "taylor"),
    ("Moore", "moore"),
    ("Jackson", "jackson"),
    ("Martin", "martin"),
    ("Lee", "lee"),
    ("Thompson", "thompson"),
    ("White", "white"),
    ("Harris", "harris"),
    ("Clark", "clark"),
    ("Lewis", "lewis"),
    ("Walker", "walker"),
    ("Young", "young"),
    ("Allen", "allen"),
    ("King", "king"),
    ("Wright", "wright"),
    ("Scott", "scott"),
    ("Green", "green"),
    ("Baker", "baker"),
    ("Adams", "adams"),
    ("Nelson", "nelson"),
    ("García", "garcia"),
    ("Rodríguez", "rodriguez"),
    ("Martínez", "martinez"),
    ("Hernández", "hernandez"),
    ("López", "lopez"),
    ("González", "gonzalez"),
    ("Fernández", "fernandez"),
    ("Müller", "muller"),
    ("Schmidt", "schmidt"),
    ("Schneider", "schneider"),
    ("Fischer", "fischer"),
    ("Weber", "weber"),
    ("Meyer", "meyer"),
    ("Wagner", "wagner"),
    ("Becker", "becker"),
    ("Nguyễn", "nguyen"),
    ("Trần", "tran"),
    ("陈", "chen"),
    ("王", "wang"),
    ("李", "li"),
    ("张", "zhang"),
    ("Sato", "sato"),
    ("Suzuki", "suzuki"),
    ("Takahashi", "takahashi"),
    ("Tanaka", "tanaka"),
    ("Dubois", "dubois"),
    ("Lefèvre", "lefevre"),
    ("Moreau", "moreau"),
    ("Kowalski", "kowalski"),
    ("Wiśniewski", "wisniewski"),
    ("Nowak", "nowak"),
    ("Jensen", "jensen"),
    ("Nielsen", "nielsen"),
    ("Sørensen", "sorensen"),
    ("O'Brien", "obrien"),
    ("O'Connor", "oconnor"),
    ("Murphy", "murphy"),
    ("Patel", "patel"),
    ("Singh", "singh"),
    ("Kumar", "kumar"),
    ("Ivanov", "ivanov"),
    ("Rossi", "rossi"),
    ("Silva", "silva"),
    ("Kim", "kim"),
    ("Park", "park"),
    ("Åberg", "aberg"),
    ("Öztürk", "ozturk"),
    ("Van der Berg", "vanderberg"),
    ("De la Cruz", "delacruz"),
    ("MacDonald", "macdonald"),
];

pub const NICKNAMES: &[&str] = &[
    "Jim", "Bob", "Bill", "Liz", "Beth", "Dave", "Rich", "Sue", "Joe", "Jess", "Tom", "Chuck",
    "Chris", "Dan", "Matt", "Maggie", "Tony", "Mike", "Kate", "Alex", "Sam", "Max", "Pepe",
    "Łukie", "Zo", "Nico", "Jo", "Ed", "Vicky", "Andy",
];

pub const SUFFIXES: &[&str] = &["Jr.", "Sr.", "III", "II", "PhD"];

pub const DEPARTMENTS: &[&str] = &[
    "Engineering",
    "Sales",
    "Marketing",
    "Finance",
    "Human Resources",
    "Legal",
    "Operations",
    "Customer Support",
    "IT",
    "Facilities",
    "Procurement",
    "Research & Development",
    "Quality Assurance",
    "Logistics",
    "Manufacturing",
    "Product Management",
    "Security",
    "Communications",
    "Data & Analytics",
    "Executive Office",
];

pub const TITLES: &[&str] = &[
    "Software Engineer",
    "Senior Software Engineer",
    "Staff Engineer",
    "Account Executive",
    "Sales Manager",
    "Marketing Specialist",
    "Financial Analyst",
    "Accountant",
    "HR Business Partner",
    "Recruiter",
    "Paralegal",
    "Counsel",
    "Operations Manager",
    "Support Specialist",
    "Systems Administrator",
    "Facilities Coordinator",
    "Buyer",
    "Research Scientist",
    "QA Engineer",
    "Logistics Coordinator",
    "Machine Operator",
    "Product Manager",
    "Security Analyst",
    "Communications Specialist",
    "Data Analyst",
    "Director, Operations",
    "VP, Sales",
    "Chief of Staff",
    "Warehouse Associate",
    "Technician II",
    "Shift Supervisor",
    "Administrative Assistant",
    "Payroll Specialist",
    "Controller",
    "Team Lead",
    "Field Service Engineer",
    "Designer",
    "Project Manager",
    "Customer Success Manager",
    "Intern",
];

pub const REGIONS: &[&str] = &["US East", "US Central", "US West", "Canada", "EMEA", "APAC"];

/// Countries whose numbers the generator writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Country {
    Us,
    Ca,
    Gb,
    Fr,
    De,
    Es,
    Au,
    Jp,
}

impl Country {
    pub const ALL: [Country; 8] = [
        Country::Us,
        Country::Ca,
        Country::Gb,
        Country::Fr,
        Country::De,
        Country::Es,
        Country::Au,
        Country::Jp,
    ];

    pub fn iso(self) -> &'static str {
        match self {
            Country::Us => "US",
            Country::Ca => "CA",
            Country::Gb => "GB",
            Country::Fr => "FR",
            Country::De => "DE",
            Country::Es => "ES",
            Country::Au => "AU",
            Country::Jp => "JP",
        }
    }

    pub fn languages(self) -> &'static [&'static str] {
        match self {
            Country::Us => &["en-US", "en-US", "en-US", "es-US"],
            Country::Ca => &["en-CA", "en-CA", "fr-CA"],
            Country::Gb => &["en-GB"],
            Country::Fr => &["fr-FR"],
            Country::De => &["de-DE", "de-DE", "en-GB"],
            Country::Es => &["es-ES", "es-ES", "ca-ES"],
            Country::Au => &["en-AU"],
            Country::Jp => &["ja-JP", "ja-JP", "en-US"],
        }
    }

    pub fn personal_domains(self) -> &'static [&'static str] {
        match self {
            Country::Us | Country::Ca => &["gmail.com", "outlook.com", "yahoo.com", "icloud.com"],
            Country::Gb => &["gmail.com", "yahoo.co.uk", "btinternet.com", "outlook.com"],
            Country::Fr => &["gmail.com", "orange.fr", "free.fr", "laposte.net"],
            Country::De => &["gmail.com", "web.de", "gmx.de", "t-online.de"],
            Country::Es => &["gmail.com", "hotmail.es", "yahoo.es"],
            Country::Au => &["gmail.com", "bigpond.com", "outlook.com"],
            Country::Jp => &["gmail.com", "yahoo.co.jp", "docomo.ne.jp"],
        }
    }
}

/// One office: the name in the Location column and the address parts that go
/// with it. `area` holds landline area codes (NANP area codes for US/CA,
/// national trunk-less prefixes elsewhere).
pub struct Location {
    pub name: &'static str,
    pub city: &'static str,
    pub state: &'static str,
    pub region: usize,
    pub country: Country,
    pub area: &'static [&'static str],
    pub postal: &'static str,
}

macro_rules! loc {
    ($name:expr, $city:expr, $state:expr, $region:expr, $country:ident, [$($a:expr),*], $postal:expr) => {
        Location {
            name: $name,
            city: $city,
            state: $state,
            region: $region,
            country: Country::$country,
            area: &[$($a),*],
            postal: $postal,
        }
    };
}

/// ~50 locations. Postal patterns: `#` is a random digit, `@` a random
/// letter, anything else is literal.
pub const LOCATIONS: &[Location] = &[
    loc!(
        "New York HQ",
        "New York",
        "NY",
        0,
        Us,
        ["212", "646", "917"],
        "100##"
    ),
    loc!("Boston", "Boston", "MA", 0, Us, ["617", "857"], "021##"),
    loc!(
        "Philadelphia",
        "Philadelphia",
        "PA",
        0,
        Us,
        ["215", "267"],
        "191##"
    ),
    loc!(
        "Atlanta",
        "Atlanta",
        "GA",
        0,
        Us,
        ["404", "678", "470"],
        "303##"
    ),
    loc!("Miami", "Miami", "FL", 0, Us, ["305", "786"], "331##"),
    loc!("Washington DC", "Washington", "DC", 0, Us, ["202"], "200##"),
    loc!(
        "Charlotte",
        "Charlotte",
        "NC",
        0,
        Us,
        ["704", "980"],
        "282##"
    ),
    loc!("Pittsburgh", "Pittsburgh", "PA", 0, Us, ["412"], "152##"),
    loc!(
        "Chicago",
        "Chicago",
        "IL",
        1,
        Us,
        ["312", "773", "872"],
        "606##"
    ),
    loc!(
        "Dallas",
        "Dallas",
        "TX",
        1,
        Us,
        ["214", "469", "972"],
        "752##"
    ),
    loc!(
        "Houston",
        "Houston",
        "TX",
        1,
        Us,
        ["713", "281", "832"],
        "770##"
    ),
    loc!("Austin", "Austin", "TX", 1, Us, ["512", "737"], "787##"),
    loc!("Minneapolis", "Minneapolis", "MN", 1, Us, ["612"], "554##"),
    loc!("St. Louis", "St. Louis", "MO", 1, Us, ["314"], "631##"),
    loc!("Denver", "Denver", "CO", 1, Us, ["303", "720"], "802##"),
    loc!("Kansas City", "Kansas City", "MO", 1, Us, ["816"], "641##"),
    loc!("Detroit", "Detroit", "MI", 1, Us, ["313"], "482##"),
    loc!("Columbus", "Columbus", "OH", 1, Us, ["614"], "432##"),
    loc!(
        "San Francisco HQ",
        "San Francisco",
        "CA",
        2,
        Us,
        ["415", "628"],
        "941##"
    ),
    loc!(
        "Los Angeles",
        "Los Angeles",
        "CA",
        2,
        Us,
        ["213", "310", "323"],
        "900##"
    ),
    loc!("Seattle", "Seattle", "WA", 2, Us, ["206"], "981##"),
    loc!("Portland", "Portland", "OR", 2, Us, ["503", "971"], "972##"),
    loc!(
        "San Diego",
        "San Diego",
        "CA",
        2,
        Us,
        ["619", "858"],
        "921##"
    ),
    loc!("Phoenix", "Phoenix", "AZ", 2, Us, ["602", "480"], "850##"),
    loc!("Las Vegas", "Las Vegas", "NV", 2, Us, ["702"], "891##"),
    loc!(
        "Salt Lake City",
        "Salt Lake City",
        "UT",
        2,
        Us,
        ["801", "385"],
        "841##"
    ),
    loc!("San Jose", "San Jose", "CA", 2, Us, ["408", "669"], "951##"),
    loc!("Toronto", "Toronto", "ON", 3, Ca, ["416", "647"], "M#@ #@#"),
    loc!(
        "Vancouver",
        "Vancouver",
        "BC",
        3,
        Ca,
        ["604", "778"],
        "V#@ #@#"
    ),
    loc!(
        "Montréal",
        "Montréal",
        "QC",
        3,
        Ca,
        ["514", "438"],
        "H#@ #@#"
    ),
    loc!("Calgary", "Calgary", "AB", 3, Ca, ["403", "587"], "T#@ #@#"),
    loc!("London", "London", "England", 4, Gb, ["20"], "EC#@ #@@"),
    loc!(
        "Manchester",
        "Manchester",
        "England",
        4,
        Gb,
        ["161"],
        "M# #@@"
    ),
    loc!(
        "Edinburgh",
        "Edinburgh",
        "Scotland",
        4,
        Gb,
        ["131"],
        "EH# #@@"
    ),
    loc!("Paris", "Paris", "Île-de-France", 4, Fr, ["1"], "750##"),
    loc!(
        "Lyon",
        "Lyon",
        "Auvergne-Rhône-Alpes",
        4,
        Fr,
        ["4"],
        "690##"
    ),
    loc!(
        "Marseille",
        "Marseille",
        "Provence-Alpes-Côte d'Azur",
        4,
        Fr,
        ["4"],
        "130##"
    ),
    loc!("Berlin", "Berlin", "Berlin", 4, De, ["30"], "10###"),
    loc!("München", "München", "Bayern", 4, De, ["89"], "80###"),
    loc!(
        "Frankfurt",
        "Frankfurt am Main",
        "Hessen",
        4,
        De,
        ["69"],
        "60###"
    ),
    loc!("Hamburg", "Hamburg", "Hamburg", 4, De, ["40"], "20###"),
    loc!("Madrid", "Madrid", "Madrid", 4, Es, ["91"], "280##"),
    loc!("Barcelona", "Barcelona", "Cataluña", 4, Es, ["93"], "080##"),
    loc!(
        "Valencia",
        "València",
        "Comunidad Valenciana",
        4,
        Es,
        ["96"],
        "460##"
    ),
    loc!("Sydney", "Sydney", "NSW", 5, Au, ["2"], "20##"),
    loc!("Melbourne", "Melbourne", "VIC", 5, Au, ["3"], "30##"),
    loc!("Brisbane", "Brisbane", "QLD", 5, Au, ["7"], "40##"),
    loc!("Perth", "Perth", "WA", 5, Au, ["8"], "60##"),
    loc!("Tokyo", "Tokyo", "Tokyo", 5, Jp, ["3"], "100-####"),
    loc!("Osaka", "Osaka", "Osaka", 5, Jp, ["6"], "530-####"),
    loc!(
        "Yokohama",
        "Yokohama",
        "Kanagawa",
        5,
        Jp,
        ["45"],
        "220-####"
    ),
];

pub const US_STREETS: &[&str] = &[
    "Main",
    "Oak",
    "Pine",
    "Maple",
    "Cedar",
    "Elm",
    "Washington",
    "Lake",
    "Hill",
    "Park",
    "Sunset",
    "Market",
    "Mission",
    "Broadway",
    "Lincoln",
    "Jefferson",
    "Madison",
    "Spring",
    "Highland",
    "Church",
];
pub const US_STREET_TYPES: &[&str] = &[
    "Street",
    "Avenue",
    "Boulevard",
    "Road",
    "Drive",
    "Lane",
    "Way",
    "Court",
];
pub const GB_STREETS: &[&str] = &[
    "High Street",
    "Station Road",
    "Church Lane",
    "Victoria Road",
    "Green Lane",
    "Manor Road",
    "Park Avenue",
    "Queen's Road",
    "King Street",
    "Mill Lane",
];
pub const FR_STREETS: &[&str] = &[
    "rue de la Paix",
    "avenue des Champs-Élysées",
    "rue Victor Hugo",
    "boulevard Saint-Michel",
    "rue de la République",
    "place Bellecour",
    "rue du Faubourg Saint-Honoré",
    "quai des Belges",
];
pub const DE_STREETS: &[&str] = &[
    "Hauptstraße",
    "Schulstraße",
    "Gartenstraße",
    "Bahnhofstraße",
    "Dorfstraße",
    "Bergstraße",
    "Lindenstraße",
    "Königsallee",
    "Friedrichstraße",
    "Müllerweg",
];
pub const ES_STREETS: &[&str] = &[
    "Calle Mayor",
    "Calle de Alcalá",
    "Gran Vía",
    "Passeig de Gràcia",
    "Calle Real",
    "Avenida de la Constitución",
    "Calle del Sol",
    "Plaza de España",
];
pub const JP_DISTRICTS: &[&str] = &[
    "Chiyoda", "Minato", "Shibuya", "Shinjuku", "Chūō", "Kita-ku", "Naka-ku", "Nishi-ku",
];
pub const AU_STREETS: &[&str] = &[
    "George Street",
    "Collins Street",
    "Queen Street",
    "Hay Street",
    "Pitt Street",
    "Flinders Lane",
    "Adelaide Terrace",
    "Elizabeth Street",
];

pub const ADDRESS_LINE2: &[&str] = &[
    "Apt 4B",
    "Suite 200",
    "Unit 12",
    "Floor 3",
    "Apt 17",
    "Suite 1500",
    "Bâtiment B",
    "2. OG",
    "Flat 6",
    "Rear",
    "PO Box 118",
];

pub const EMPLOYMENT_TYPES: &[(&str, u32)] = &[
    ("Full-Time", 80),
    ("Part-Time", 10),
    ("Contractor", 6),
    ("Intern", 2),
    ("Temporary", 2),
];

/// Status values; the benchmark's filter keeps `Active` and `Leave`.
pub const STATUSES: &[(&str, u32)] = &[
    ("Active", 920),
    ("Leave", 30),
    ("Terminated", 30),
    ("Inactive", 20),
];

pub const SHIFTS: &[(&str, u32)] = &[
    ("Day", 70),
    ("Night", 10),
    ("Swing", 8),
    ("Rotating", 7),
    ("", 5),
];

pub const UNIONS: &[&str] = &[
    "Local 1245",
    "SEIU Local 32BJ",
    "Teamsters Local 705",
    "Unite",
    "IG Metall",
    "CGT",
    "UGT",
    "CFMEU",
];

pub const RELATIONS: &[&str] = &["spouse", "partner", "parent", "sibling", "friend"];

pub const NOTES: &[&str] = &[
    "Prefers SMS, not email",
    "On-call rotation: week 2",
    "Hearing impaired; use SMS and email only",
    "Badge \"temporary\" until renewal",
    "Works remotely Mondays and Fridays",
    "First-aid trained, fire warden for floor",
    "Relocating next quarter, keep old desk until then",
    "Requires accessible evacuation route",
    "Night shift lead, call mobile first",
    "Returning from parental leave, phased schedule",
    "Contractor via agency, \"Acme Staffing\"",
    "Speaks English, Spanish and Portuguese",
    "Do not call after 21:00 local time",
    "Member of the emergency response team",
    "Shares desk with the visiting engineer",
];
